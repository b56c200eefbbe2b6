"""One rollout as the gateway keeps it: what moves where (model, A, B, plan, tag), where it
is (`RolloutState`), and what happened (events). It round-trips through JSON, which is
how it is saved (Redis or memory) and how the admin API shows it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kvserve.control.rollout import Decision, Phase, QualityWindow, RolloutPlan, RolloutState, Thresholds


@dataclass(frozen=True)
class TagMove:
    """On promotion, point `tag` at `ref` (NAME:VERSION) in the configured registry."""

    tag: str
    ref: str


@dataclass
class Rollout:
    model: str  # the gateway's client-facing model name
    baseline: str  # version A (the gateway's version name)
    candidate: str  # version B
    plan: RolloutPlan
    state: RolloutState
    started_at: float  # wall-clock seconds
    tag: TagMove | None = None
    events: list[dict[str, Any]] = field(default_factory=list)  # newest last
    last: Decision | None = None  # the latest decision of a tick (not saved)
    window: dict[str, Any] = field(default_factory=dict)  # the latest snapshot, for status (not saved)
    quality_base: QualityWindow = QualityWindow()  # the quality book's counts of B when judging began (not saved)

    @property
    def active(self) -> bool:
        return self.state.phase in (Phase.RUNNING, Phase.PAUSED)

    @property
    def candidate_percent(self) -> float:
        """B's share of traffic in this state."""
        final = {Phase.PROMOTED: 100.0, Phase.ROLLED_BACK: 0.0}
        return final.get(self.state.phase, self.plan.steps[self.state.step])

    def weights(self) -> dict[str, float]:
        b = self.candidate_percent
        return {self.baseline: 100.0 - b, self.candidate: b}

    def to_json(self) -> dict[str, Any]:
        """What is saved (and restored after a restart)."""
        return {
            "model": self.model, "from": self.baseline, "to": self.candidate,
            "steps": list(self.plan.steps), "bake_s": self.plan.bake_s, "thresholds": asdict(self.plan.thresholds),
            "state": {"step": self.state.step, "step_started": self.state.step_started,
                      "phase": self.state.phase.value, "reason": self.state.reason},
            "started_at": self.started_at, "tag": None if self.tag is None else asdict(self.tag),
            "events": self.events,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rollout:
        """Raises KeyError, TypeError or ValueError (RolloutError included) on a malformed record."""
        plan = RolloutPlan(tuple(float(s) for s in data["steps"]), float(data["bake_s"]),
                           Thresholds(**data["thresholds"]))
        s = data["state"]
        state = RolloutState(int(s["step"]), float(s["step_started"]), Phase(s["phase"]), str(s["reason"]))
        if not 0 <= state.step < len(plan.steps):
            raise ValueError(f"step {state.step} is not a step of the plan")
        tag = None if data.get("tag") is None else TagMove(**data["tag"])
        return cls(str(data["model"]), str(data["from"]), str(data["to"]), plan, state, float(data["started_at"]),
                   tag, list(data.get("events", [])))

    def describe(self, now: float) -> dict[str, Any]:
        """The admin API's view: the saved record, plus the step's progress and the last verdict."""
        out = self.to_json()
        out.update({
            "object": "rollout", "phase": self.state.phase.value, "step": self.state.step + 1,
            "candidate_percent": self.candidate_percent, "weights": self.weights(),
            "step_elapsed_s": round(now - self.state.step_started, 3),
        })
        if self.last is not None:
            out["last_decision"] = {"action": self.last.action.value, "reason": self.last.reason}
        if self.window:
            out["window"] = self.window
        return out
