"""Autoscaling decisions: how many replicas a model wants, from a snapshot of its fleet.

Pure functions of a policy, the decider's memory and a metrics snapshot, so that the
launcher (`kvserve up`) only feeds it snapshots and carries out what it decides. The
rule follows Kubernetes' HPA with KEDA's scale to zero:

- each signal proposes `ceil(replicas * observed / target)`: queued requests per
  replica (those waiting in the engines plus those the gateway holds for want of a
  replica) and KV cache usage; a ratio within `tolerance` of 1 proposes no change;
- any activity (something running, waiting or held) proposes at least one replica, so
  a fleet at zero wakes on its first request and only idleness takes it back to zero;
- the proposal is clamped to [min_replicas, max_replicas];
- stabilization: a scale-up takes the lowest proposal of the last `scale_up_window_s`
  and a scale-down the highest of the last `scale_down_window_s`, so a dip or a burst
  shorter than its window changes nothing;
- a change moves at most `max_step` replicas, and none follows another within
  `cooldown_s`, except a wake from zero, which never waits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable


class AutoscalerError(ValueError):
    """A policy that cannot work."""


@dataclass(frozen=True)
class ScalePolicy:
    """Bounds, targets and damping of one model's replica count."""

    min_replicas: int = 1  # never fewer (0 allows scale to zero)
    max_replicas: int = 4  # never more
    target_waiting: float = 2.0  # queued requests per replica the fleet aims at
    target_kv_usage: float = 0.8  # KV cache usage (0..1, mean over replicas) the fleet aims at
    tolerance: float = 0.1  # a signal within this fraction of its target proposes no change
    scale_up_window_s: float = 0.0  # a scale-up needs every proposal of this window to agree
    scale_down_window_s: float = 300.0  # a scale-down needs every proposal of this window to agree
    cooldown_s: float = 30.0  # no change within this long of the previous one (waking from zero excepted)
    max_step: int = 1  # replicas added or removed by one change at most

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise AutoscalerError("need 0 <= min_replicas <= max_replicas and max_replicas >= 1")
        if self.target_waiting <= 0 or not 0 < self.target_kv_usage <= 1:
            raise AutoscalerError("target_waiting must be > 0 and target_kv_usage in (0, 1]")
        if not 0 <= self.tolerance < 1 or self.max_step < 1:
            raise AutoscalerError("tolerance must be in [0, 1) and max_step >= 1")
        if min(self.scale_up_window_s, self.scale_down_window_s, self.cooldown_s) < 0:
            raise AutoscalerError("windows and cooldown must be >= 0")


@dataclass(frozen=True)
class FleetSnapshot:
    """One model's fleet at time `at` (seconds, any monotonic clock)."""

    at: float
    replicas: int  # replicas started (ready or starting): what a decision changes
    ready: int  # replicas whose metrics were read
    waiting: float  # requests queued in the engines, summed over ready replicas
    running: float  # requests running in the engines, summed
    kv_usage: float  # mean KV cache usage of the ready replicas, 0..1 (0 with none)
    held: float  # requests the gateway holds because no replica is ready


@dataclass(frozen=True)
class ScalerMemory:
    """What the decider remembers between snapshots."""

    proposals: tuple[tuple[float, int], ...] = ()  # (at, proposed replicas), oldest first
    last_change_at: float | None = None
    started_at: float | None = None  # first snapshot: before it, the replica count stands for every proposal


@dataclass(frozen=True)
class Decision:
    """The replica count wanted now, why, and the inputs it was made from (for the log)."""

    at: float
    current: int
    desired: int
    reason: str
    inputs: dict[str, float] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.desired != self.current


def propose(policy: ScalePolicy, fleet: FleetSnapshot) -> tuple[int, str]:
    """The replica count the signals ask for right now, clamped, with the signal that set it."""
    queued = fleet.waiting + fleet.held
    base = max(fleet.replicas, 1)
    candidates = {"idle": 0}
    per_replica = queued / base  # at zero replicas: the whole queue is the first replica's
    candidates["waiting"] = _ratio(base, per_replica / policy.target_waiting, policy.tolerance, fleet.replicas)
    if fleet.ready:
        candidates["kv_usage"] = _ratio(base, fleet.kv_usage / policy.target_kv_usage, policy.tolerance,
                                        fleet.replicas)
    if queued > 0 or fleet.running > 0:  # last: a tie names the signal, not this floor
        candidates["active"] = 1
    reason = max(candidates, key=lambda name: candidates[name])
    wanted = min(max(candidates[reason], policy.min_replicas), policy.max_replicas)
    return wanted, reason if wanted == candidates[reason] else f"{reason}, clamped"


def _ratio(base: int, ratio: float, tolerance: float, current: int) -> int:
    if current and abs(ratio - 1.0) <= tolerance:
        return current
    return math.ceil(base * ratio - 1e-9)


def decide(policy: ScalePolicy, memory: ScalerMemory, fleet: FleetSnapshot) -> tuple[Decision, ScalerMemory]:
    """The decision for `fleet` and the memory to pass with the next snapshot."""
    proposal, reason = propose(policy, fleet)
    horizon = fleet.at - max(policy.scale_up_window_s, policy.scale_down_window_s)
    proposals = tuple(p for p in memory.proposals if p[0] >= horizon) + ((fleet.at, proposal),)
    started = fleet.at if memory.started_at is None else memory.started_at
    memory = replace(memory, proposals=proposals, started_at=started)
    desired, why = _stabilized(policy, memory, fleet, reason)
    inputs = {"waiting": fleet.waiting, "running": fleet.running, "held": fleet.held, "kv_usage": fleet.kv_usage,
              "ready": float(fleet.ready), "proposal": float(proposal)}
    if desired != fleet.replicas:
        memory = replace(memory, last_change_at=fleet.at)
    return Decision(fleet.at, fleet.replicas, desired, why, inputs), memory


def _window(memory: ScalerMemory, now: float, window_s: float, current: int,
            pick: Callable[[list[int]], int]) -> int:
    """min or max of the proposals within the window; a window reaching back before the
    first snapshot counts the current replica count as a proposal too."""
    values = [n for at, n in memory.proposals if at >= now - window_s]
    if memory.started_at is not None and now - window_s < memory.started_at:
        values.append(current)
    return pick(values)


def _stabilized(policy: ScalePolicy, memory: ScalerMemory, fleet: FleetSnapshot, reason: str) -> tuple[int, str]:
    current, now = fleet.replicas, fleet.at
    up = _window(memory, now, policy.scale_up_window_s, current, min)
    down = _window(memory, now, policy.scale_down_window_s, current, max)
    latest = memory.proposals[-1][1]
    if current == 0 and latest > 0:  # a request waits for any replica at all: no window, no cooldown
        return min(latest, policy.max_step), f"wake: {reason}"
    if up > current:
        target, direction = min(up, current + policy.max_step), "up"
    elif down < current:
        target, direction = max(down, current - policy.max_step), "down"
    else:
        return current, f"hold: {reason}"
    if memory.last_change_at is not None and now - memory.last_change_at < policy.cooldown_s:
        return current, f"cooldown ({direction} wanted: {reason})"
    return target, f"{direction}: {reason}"
