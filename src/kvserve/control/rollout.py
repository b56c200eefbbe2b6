"""Rollout decisions: move traffic from version A to B in steps, or roll back.

Everything here is a pure function of a plan, a state, a metrics snapshot and the
time, so that the gateway (or anything else that measures both versions) only has to
feed it snapshots and carry out what it decides. The rule:

- B is judged against A over the same window, and only on a window that started
  within the current step (traffic at another weight says nothing about this one);
- any breach (error rate, TTFT p95 or TPOT p95 beyond its threshold, each judged once
  both versions have its minimum of samples; and, where the plan sets them, B's answers
  against A's: shadow similarity, greedy exact-match share, mean client score, each
  judged once B has its minimum of samples) rolls back at once;
- too few samples never advance or promote: the rollout holds;
- otherwise the step holds until its bake time has passed, then advances, and after the
  last step's bake B is promoted (100% of traffic).

Steps are B's share of traffic, below 100%: A must keep serving to be a baseline; the
promotion after the last step is what sends 100%.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace


class RolloutError(ValueError):
    """A plan or state that cannot work."""


@dataclass(frozen=True)
class Thresholds:
    """When B is worse than A, and how much evidence that takes."""

    max_error_rate_increase: float = 0.02  # B's error rate may exceed A's by this much (0.02 = 2 points)
    max_ttft_p95_ratio: float = 1.5  # B's TTFT p95 / A's may reach this
    max_tpot_p95_ratio: float = 1.5  # B's TPOT p95 / A's may reach this
    latency_slack_s: float = 0.005  # a p95 within this many seconds of A's is never a breach (noise)
    min_requests: int = 100  # requests per version in the window before the error rate is judged
    min_latency_samples: int = 50  # successful requests per version before p95s are judged
    min_shadow_similarity: float | None = None  # B's mean embedding similarity to A's answers (shadow); None = not judged
    min_exact_match_rate: float | None = None  # share of B's greedy shadow answers identical to A's; None = not judged
    min_feedback_score: float | None = None  # B's mean client score (0 to 1); None = not judged
    min_similarity_samples: int = 20  # shadow comparisons with a similarity before it is judged
    min_exact_match_samples: int = 20  # greedy shadow comparisons before the exact-match share is judged
    min_feedback_samples: int = 20  # client scores of B's answers before their mean is judged

    def __post_init__(self) -> None:
        if not 0 <= self.max_error_rate_increase <= 1:
            raise RolloutError("max_error_rate_increase must be in [0, 1]")
        if self.max_ttft_p95_ratio < 1 or self.max_tpot_p95_ratio < 1:
            raise RolloutError("latency ratios must be at least 1")
        if self.latency_slack_s < 0 or self.min_requests < 1 or self.min_latency_samples < 1:
            raise RolloutError("latency_slack_s must be >= 0 and sample minimums >= 1")
        for name in ("min_shadow_similarity", "min_exact_match_rate", "min_feedback_score"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise RolloutError(f"{name} must be in [0, 1]")
        if min(self.min_similarity_samples, self.min_exact_match_samples, self.min_feedback_samples) < 1:
            raise RolloutError("sample minimums must be >= 1")

    @property
    def judges_shadow(self) -> bool:
        """Whether B must be shadowed against A (a similarity or exact-match threshold is set)."""
        return self.min_shadow_similarity is not None or self.min_exact_match_rate is not None


@dataclass(frozen=True)
class RolloutPlan:
    """Steps of B's traffic share and how long each bakes."""

    steps: tuple[float, ...] = (5.0, 25.0, 50.0)  # percent of traffic to B, increasing, each in (0, 100)
    bake_s: float = 300.0  # seconds each step must run without a breach before the next
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self) -> None:
        if not self.steps:
            raise RolloutError("a rollout plan needs at least one step")
        if any(not 0 < s < 100 for s in self.steps) or list(self.steps) != sorted(set(self.steps)):
            raise RolloutError(f"steps must increase strictly within (0, 100) percent, got {self.steps}")
        if self.bake_s <= 0:
            raise RolloutError("bake_s must be positive")


class Phase(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout is: its step (an index into plan.steps) and since when."""

    step: int  # index into plan.steps
    step_started: float  # clock time the current step began
    phase: Phase = Phase.RUNNING
    reason: str = ""  # why it was rolled back, paused or promoted


@dataclass(frozen=True)
class VersionWindow:
    """One version's measurements over a window."""

    requests: int  # finished requests (successes and errors)
    errors: int  # of which failed (5xx, timeouts, broken streams)
    ttft_p95_s: float | None  # p95 time to first token of the successes; None without any
    tpot_p95_s: float | None  # p95 time per output token of the successes

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def successes(self) -> int:
        return self.requests - self.errors


@dataclass(frozen=True)
class QualityWindow:
    """How B's answers compare: shadow copies of A's requests answered by B, against A's
    answers, and clients' scores of B's answers. Sums, so that two can be subtracted."""

    similarities: int = 0  # shadow comparisons with an embedding similarity
    similarity_sum: float = 0.0
    greedy: int = 0  # shadow comparisons of greedy requests (temperature 0)
    exact: int = 0  # of which B's answer was A's, character for character
    scores: int = 0  # client scores of B's answers
    score_sum: float = 0.0  # each in [0, 1]

    def since(self, earlier: QualityWindow) -> QualityWindow:
        """What was added after `earlier` (a copy of the same counters taken before)."""
        return QualityWindow(*(getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)))

    @property
    def similarity_mean(self) -> float | None:
        return self.similarity_sum / self.similarities if self.similarities else None

    @property
    def exact_match_rate(self) -> float | None:
        return self.exact / self.greedy if self.greedy else None

    @property
    def score_mean(self) -> float | None:
        return self.score_sum / self.scores if self.scores else None


@dataclass(frozen=True)
class MetricsSnapshot:
    """A (baseline) and B (candidate) measured over the same window [start, end], and
    B's answers against A's (since the rollout began, for a plan that judges them)."""

    baseline: VersionWindow
    candidate: VersionWindow
    window_start: float
    window_end: float
    quality: QualityWindow = QualityWindow()


class Action(enum.Enum):
    HOLD = "hold"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLL_BACK = "roll_back"


@dataclass(frozen=True)
class Decision:
    action: Action
    candidate_percent: float  # B's traffic share to set now
    reason: str
    breaches: tuple[str, ...] = ()  # what a roll back breached, as BREACHES names


def start(now: float) -> RolloutState:
    return RolloutState(step=0, step_started=now)


def pause(state: RolloutState, reason: str) -> RolloutState:
    """Hold at the current share until resumed (an operator's call, not a verdict)."""
    if state.phase is not Phase.RUNNING:
        raise RolloutError(f"only a running rollout can be paused; this one is {state.phase.value}")
    return replace(state, phase=Phase.PAUSED, reason=reason)


def resume(state: RolloutState, now: float) -> RolloutState:
    """Run again; the step bakes afresh from `now`, since what happened while paused was not judged."""
    if state.phase is not Phase.PAUSED:
        raise RolloutError(f"only a paused rollout can be resumed; this one is {state.phase.value}")
    return RolloutState(step=state.step, step_started=now)


def abort(state: RolloutState, reason: str) -> RolloutState:
    """An operator's roll back: B gets no traffic, whatever the measurements say."""
    if state.phase not in (Phase.RUNNING, Phase.PAUSED):
        raise RolloutError(f"only a running or paused rollout can be aborted; this one is {state.phase.value}")
    return replace(state, phase=Phase.ROLLED_BACK, reason=reason)


def decide(plan: RolloutPlan, state: RolloutState, snapshot: MetricsSnapshot, now: float) -> Decision:
    """What to do now; see the module docstring for the rule."""
    percent = plan.steps[state.step]
    if state.phase is not Phase.RUNNING:
        final = {Phase.PROMOTED: 100.0, Phase.ROLLED_BACK: 0.0}.get(state.phase, percent)
        return Decision(Action.HOLD, final, f"rollout is {state.phase.value}")
    if snapshot.window_start < state.step_started:
        return Decision(Action.HOLD, percent, "the window began before this step")
    verdict = judge(plan.thresholds, snapshot)
    if verdict.breaches:
        return Decision(Action.ROLL_BACK, 0.0, "; ".join(verdict.breaches), verdict.kinds)
    if not verdict.complete:
        return Decision(Action.HOLD, percent, _too_few(plan.thresholds, snapshot))
    baked = now - state.step_started
    if baked < plan.bake_s:
        return Decision(Action.HOLD, percent, f"baking: {baked:.0f} of {plan.bake_s:.0f} s at {percent:g}%")
    if state.step + 1 < len(plan.steps):
        nxt = plan.steps[state.step + 1]
        return Decision(Action.ADVANCE, nxt, f"step {percent:g}% baked {baked:.0f} s without a breach")
    return Decision(Action.PROMOTE, 100.0, f"all steps baked without a breach (last {percent:g}%)")


def apply(state: RolloutState, decision: Decision, now: float) -> RolloutState:
    """The state after carrying out `decision` at `now`."""
    if decision.action is Action.ADVANCE:
        return RolloutState(step=state.step + 1, step_started=now)
    if decision.action is Action.PROMOTE:
        return replace(state, phase=Phase.PROMOTED, reason=decision.reason)
    if decision.action is Action.ROLL_BACK:
        return replace(state, phase=Phase.ROLLED_BACK, reason=decision.reason)
    return state


@dataclass(frozen=True)
class Verdict:
    """B against A over one window."""

    breaches: tuple[str, ...]  # the thresholds B breaches, in words
    complete: bool  # every threshold had enough samples to be judged
    kinds: tuple[str, ...] = ()  # the same breaches as BREACHES names (bounded, for metric labels)


BREACHES = ("error_rate", "ttft_p95", "tpot_p95", "shadow_similarity", "exact_match", "feedback_score")  # what B can breach


def judge(t: Thresholds, snapshot: MetricsSnapshot) -> Verdict:
    """Each threshold is judged as soon as its own samples suffice, so that a B failing
    every request (no latencies at all) is caught by its error rate alone."""
    a, b = snapshot.baseline, snapshot.candidate
    breaches: dict[str, str] = {}  # kind -> in words
    errors_judged = min(a.requests, b.requests) >= t.min_requests
    if errors_judged and b.error_rate - a.error_rate > t.max_error_rate_increase:
        breaches["error_rate"] = (f"error rate {b.error_rate:.1%} vs baseline {a.error_rate:.1%} "
                                  f"(allowed +{t.max_error_rate_increase:.1%})")
    latency_judged = min(a.successes, b.successes) >= t.min_latency_samples
    if latency_judged:
        for kind, name, a_s, b_s, ratio in (("ttft_p95", "TTFT p95", a.ttft_p95_s, b.ttft_p95_s, t.max_ttft_p95_ratio),
                                            ("tpot_p95", "TPOT p95", a.tpot_p95_s, b.tpot_p95_s, t.max_tpot_p95_ratio)):
            breach = _latency_breach(name, a_s, b_s, ratio, t.latency_slack_s)
            if breach is not None:
                breaches[kind] = breach
    quality_breaches, quality_judged = judge_quality(t, snapshot.quality)
    breaches.update(quality_breaches)
    return Verdict(tuple(breaches.values()), errors_judged and latency_judged and quality_judged, tuple(breaches))


@dataclass(frozen=True)
class QualityCriterion:
    """One quality threshold the plan sets, with B's figure for it."""

    kind: str  # a BREACHES name
    words: str
    minimum: float
    value: float | None  # B's figure; None without samples
    samples: int  # B's samples of it
    needed: int  # samples before it is judged


def quality_criteria(t: Thresholds, q: QualityWindow) -> list[QualityCriterion]:
    """The quality thresholds the plan sets (those left None are not judged)."""
    criteria = (
        ("shadow_similarity", "shadow similarity", t.min_shadow_similarity, q.similarity_mean, q.similarities,
         t.min_similarity_samples),
        ("exact_match", "greedy exact-match share", t.min_exact_match_rate, q.exact_match_rate, q.greedy,
         t.min_exact_match_samples),
        ("feedback_score", "mean feedback score", t.min_feedback_score, q.score_mean, q.scores,
         t.min_feedback_samples),
    )
    return [QualityCriterion(*c) for c in criteria if c[2] is not None]


def judge_quality(t: Thresholds, q: QualityWindow) -> tuple[dict[str, str], bool]:
    """Breaches of the quality thresholds the plan sets (kind -> in words), and whether each
    had B's minimum of samples. Each is a floor on B's figure: A's answers are the reference."""
    breaches: dict[str, str] = {}
    judged = True
    for c in quality_criteria(t, q):
        if c.samples < c.needed or c.value is None:
            judged = False
        elif c.value < c.minimum:
            breaches[c.kind] = f"{c.words} {c.value:.3f} over {c.samples} samples (minimum {c.minimum:g})"
    return breaches, judged


def _latency_breach(name: str, a: float | None, b: float | None, max_ratio: float, slack: float) -> str | None:
    if a is None or b is None:
        return None
    if b > a * max_ratio and b - a > slack:
        ratio = f"{b / a:.2f}x" if a > 0 else "inf"
        return f"{name} {b * 1000:.0f} ms vs baseline {a * 1000:.0f} ms ({ratio}, allowed {max_ratio:g}x)"
    return None


def _too_few(t: Thresholds, snapshot: MetricsSnapshot) -> str:
    """What the window still lacks before every threshold can be judged."""
    a, b = snapshot.baseline, snapshot.candidate
    short = []
    if min(a.requests, b.requests) < t.min_requests:
        short.append(f"{b.requests} requests of B and {a.requests} of A (need {t.min_requests} each)")
    if min(a.successes, b.successes) < t.min_latency_samples:
        short.append(f"{b.successes} successes of B and {a.successes} of A (need {t.min_latency_samples} each)")
    short.extend(f"{c.samples} {c.words} samples of B (need {c.needed})"
                 for c in quality_criteria(t, snapshot.quality) if c.samples < c.needed)
    return "too few samples: " + "; ".join(short)
