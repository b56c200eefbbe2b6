"""The rollout controller: runs the gateway's rollouts in the background.

Every tick, each running rollout's window since its step began is judged by
`kvserve.control.rollout.decide`, together with B's answers against A's since the
rollout began (shadow comparisons and client scores, from the quality book), and the
decision is carried out on the model's version weights: B gets the step's share and A
the rest (other versions of the model get none while the rollout is active, and the
weights are set again every tick, so a config reload or a hand-set weight cannot drift
the split). A breach sends 100% back to A at once; a promotion sends 100% to B and may
move a registry tag. Every change is an event (history, metric, JSON log line, audit
line) and is saved, so a restarted gateway resumes the rollout at its step with its
weights.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from typing import Any, Callable

from kvserve.control.registry_config import RegistryConfig
from kvserve.control.rollout import (
    Action, Decision, Phase, QualityWindow, RolloutPlan, VersionWindow, abort, apply, decide, pause, resume, start,
)
from kvserve.gateway.audit import AuditLog
from kvserve.gateway.quality.book import QualityBook
from kvserve.gateway.rollouts.config import RolloutsConfig
from kvserve.gateway.rollouts.metrics import RolloutMetrics
from kvserve.gateway.rollouts.promotion import move_tag
from kvserve.gateway.rollouts.record import Rollout, TagMove
from kvserve.gateway.rollouts.store import RolloutStore
from kvserve.gateway.rollouts.window import OutcomeWindow
from kvserve.gateway.routing.table import RoutingTable
from kvserve.gateway.store.redis_link import RedisUnavailable

log = logging.getLogger("kvserve.gateway.rollout")
EVENTS = {Action.ADVANCE: "advanced", Action.PROMOTE: "promoted", Action.ROLL_BACK: "rolled_back"}


class RolloutConflict(Exception):
    """The model already has an active rollout."""


class RolloutController:
    def __init__(self, config: RolloutsConfig, store: RolloutStore, table: Callable[[], RoutingTable],
                 metrics: RolloutMetrics, clock: Callable[[], float] = time.time, quality: QualityBook | None = None,
                 audit: Callable[[], AuditLog | None] = lambda: None) -> None:
        self.store = store
        self.table = table  # the current routing table (a reload swaps it)
        self.metrics = metrics
        self.clock = clock
        self.quality = quality or QualityBook()  # shadow comparisons and feedback, per version
        self.audit = audit  # the current audit log, if any (a reload may open another)
        self.window = OutcomeWindow(config.max_samples, clock)
        self.rollouts: dict[str, Rollout] = {}  # model -> its latest rollout
        self.lock = asyncio.Lock()  # ticks and admin calls change rollouts one at a time
        self.restored = False  # the saved rollouts have been read (Redis may be down at start)
        self.unsaved: set[str] = set()  # models whose record could not be saved yet
        self._task: asyncio.Task[None] | None = None
        self.configure(config)

    def configure(self, config: RolloutsConfig) -> None:
        self.tick_s = config.tick_s
        self.history = config.history
        self.registry: RegistryConfig | None = config.registry_config()
        self.window.max_samples = config.max_samples

    async def start(self) -> None:
        """Restore saved rollouts and begin ticking (inside the event loop)."""
        async with self.lock:
            await self._restore()
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick()
            except Exception:  # a bug must not stop every later rollout decision
                log.exception("rollout tick failed")

    async def tick(self) -> None:
        async with self.lock:
            if not self.restored:
                await self._restore()
            now = self.clock()
            for rollout in list(self.rollouts.values()):
                if rollout.state.phase is Phase.RUNNING:
                    await self._judge(rollout, now)
                if rollout.active:
                    self._set_weights(rollout)
            await self._save_pending()

    def reassert(self) -> None:
        """Set the active rollouts' weights again (after a config reload rebuilt the table)."""
        for rollout in self.rollouts.values():
            if rollout.active:
                self._set_weights(rollout)

    # -- operator actions (the admin API) --

    async def begin(self, model: str, baseline: str, candidate: str, plan: RolloutPlan,
                    tag: TagMove | None) -> Rollout:
        async with self.lock:
            current = self.rollouts.get(model)
            if current is not None and current.active:
                raise RolloutConflict(f"model '{model}' already has a {current.state.phase.value} rollout "
                                      f"({current.baseline} -> {current.candidate}); abort it first")
            now = self.clock()
            rollout = Rollout(model, baseline, candidate, plan, start(now), now, tag)
            rollout.quality_base = self.quality.window(model, candidate, baseline)
            self.rollouts[model] = rollout
            await self._changed(rollout, "started", f"{baseline} -> {candidate} in steps "
                                f"{', '.join(f'{s:g}%' for s in plan.steps)}, {plan.bake_s:g} s each")
            return rollout

    async def pause(self, model: str, reason: str) -> Rollout:
        async with self.lock:
            rollout = self.get(model)
            rollout.state = pause(rollout.state, reason)
            await self._changed(rollout, "paused", reason)
            return rollout

    async def resume(self, model: str) -> Rollout:
        async with self.lock:
            rollout = self.get(model)
            rollout.state = resume(rollout.state, self.clock())
            await self._changed(rollout, "resumed", "the step bakes afresh")
            return rollout

    async def abort(self, model: str, reason: str) -> Rollout:
        async with self.lock:
            rollout = self.get(model)
            rollout.state = abort(rollout.state, reason)
            self.metrics.rolled_back(model, ())
            await self._changed(rollout, "rolled_back", reason)
            return rollout

    def get(self, model: str) -> Rollout:
        """KeyError when the model never had a rollout."""
        return self.rollouts[model]

    # -- carrying out decisions --

    async def _judge(self, rollout: Rollout, now: float) -> None:
        state = rollout.state
        snapshot = self.window.snapshot(rollout.model, rollout.baseline, rollout.candidate, state.step_started, now)
        quality = self.quality.window(rollout.model, rollout.candidate, rollout.baseline).since(rollout.quality_base)
        snapshot = replace(snapshot, quality=quality)
        decision = decide(rollout.plan, state, snapshot, now)
        rollout.last = decision
        rollout.window = {"start": snapshot.window_start, "end": snapshot.window_end,
                          "baseline": _window_json(snapshot.baseline), "candidate": _window_json(snapshot.candidate),
                          "quality": _quality_json(quality)}
        if decision.action is Action.HOLD:
            return
        rollout.state = apply(state, decision, now)
        if decision.action is Action.ROLL_BACK:
            self.metrics.rolled_back(rollout.model, decision.breaches)
        await self._changed(rollout, EVENTS[decision.action], decision.reason, decision)
        if decision.action is Action.PROMOTE and rollout.tag is not None:
            await self._move_tag(rollout)

    async def _changed(self, rollout: Rollout, event: str, reason: str, decision: Decision | None = None) -> None:
        """Carry out a new state: weights, what the window keeps, metrics, the event, the save."""
        self._set_weights(rollout)
        if rollout.active:
            self.window.watch(rollout.model, rollout.state.step_started)
        else:
            self.window.unwatch(rollout.model)
        self.metrics.show(rollout)
        self._event(rollout, event, reason, breaches=list(decision.breaches) if decision else None)
        await self._save(rollout)

    def _set_weights(self, rollout: Rollout) -> None:
        model = self.table().models.get(rollout.model)
        if model is None:
            return  # a reload removed the model; the rollout holds until it comes back or is aborted
        weights = rollout.weights()
        for name, version in model.versions.items():
            version.weight = weights.get(name, 0.0)

    async def _move_tag(self, rollout: Rollout) -> None:
        tag = rollout.tag
        assert tag is not None
        if self.registry is None:
            self._event(rollout, "tag_failed", "rollouts.registry is not configured")
            return
        try:
            await asyncio.to_thread(move_tag, self.registry, tag.ref, tag.tag)
        except Exception as exc:  # the promotion stands; the operator tags by hand
            self._event(rollout, "tag_failed", f"{type(exc).__name__}: {exc}")
        else:
            self._event(rollout, "tagged", f"{tag.ref.split(':')[0]}@{tag.tag} -> {tag.ref}")
        await self._save(rollout)

    def _event(self, rollout: Rollout, event: str, reason: str, **extra: Any) -> None:
        entry = {"time": round(self.clock(), 3), "event": event, "step": rollout.state.step + 1,
                 "candidate_percent": rollout.candidate_percent, "reason": reason,
                 **{k: v for k, v in extra.items() if v is not None}}
        rollout.events.append(entry)
        del rollout.events[:-self.history]
        self.metrics.event(rollout.model, event)
        line = {**entry, "event": f"rollout_{event}", "model": rollout.model, "from": rollout.baseline,
                "to": rollout.candidate, "phase": rollout.state.phase.value}
        level = logging.WARNING if event in ("rolled_back", "tag_failed") else logging.INFO
        log.log(level, json.dumps(line))
        audit = self.audit()
        if audit is not None:
            audit.write("rollout", {**{k: v for k, v in line.items() if k != "time"}, "event": event})

    # -- saving and restoring --

    async def _save(self, rollout: Rollout) -> None:
        self.unsaved.add(rollout.model)
        await self._save_pending()

    async def _save_pending(self) -> None:
        for model in sorted(self.unsaved):
            try:
                await self.store.save(model, self.rollouts[model].to_json())
            except RedisUnavailable:
                return  # tried again next tick; the rollout runs on from memory meanwhile
            self.unsaved.discard(model)

    async def _restore(self) -> None:
        try:
            records = await self.store.load()
        except RedisUnavailable:
            return  # tried again next tick
        self.restored = True
        for record in records:
            try:
                rollout = Rollout.from_json(record)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("cannot restore a saved rollout (%s: %s); skipping it", type(exc).__name__, exc)
                continue
            if rollout.model in self.rollouts:
                continue  # begun here while Redis was down: this gateway's is newer
            rollout.quality_base = self.quality.window(rollout.model, rollout.candidate, rollout.baseline)
            self.rollouts[rollout.model] = rollout
            self._set_weights(rollout)
            if rollout.active:
                self.window.watch(rollout.model, rollout.state.step_started)
            self.metrics.show(rollout)
            self.unsaved.add(rollout.model)
            self._event(rollout, "restored", f"{rollout.state.phase.value} at step {rollout.state.step + 1}")


def _window_json(window: VersionWindow) -> dict[str, Any]:
    return {"requests": window.requests, "errors": window.errors, "ttft_p95_s": window.ttft_p95_s,
            "tpot_p95_s": window.tpot_p95_s}


def _quality_json(q: QualityWindow) -> dict[str, Any]:
    """B's answers against A's since the rollout began (or since this gateway restarted)."""
    return {"similarities": q.similarities, "similarity_mean": _rounded(q.similarity_mean), "greedy": q.greedy,
            "exact_match_rate": _rounded(q.exact_match_rate), "scores": q.scores,
            "score_mean": _rounded(q.score_mean)}


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
