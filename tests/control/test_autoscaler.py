"""The autoscaler's decisions on a fake clock: ramps, steady load, idleness, scale to zero."""

from __future__ import annotations

import pytest

from kvserve.control.autoscaler import AutoscalerError, FleetSnapshot, ScalePolicy, ScalerMemory, decide


def fleet(at: float, replicas: int, waiting: float = 0.0, running: float = 0.0, kv: float = 0.0,
          held: float = 0.0) -> FleetSnapshot:
    return FleetSnapshot(at, replicas, replicas, waiting, running, kv, held)


def run(policy: ScalePolicy, loads: list[tuple[float, float, float]], replicas: int,
        interval: float = 1.0) -> list[int]:
    """Feed (waiting, running, kv) per tick, carrying out each decision; the replica count after each tick."""
    memory, counts = ScalerMemory(), []
    for tick, (waiting, running, kv) in enumerate(loads):
        decision, memory = decide(policy, memory, fleet(tick * interval, replicas, waiting, running, kv))
        replicas = decision.desired
        counts.append(replicas)
    return counts


def test_a_queue_above_target_scales_out_by_at_most_max_step_per_cooldown():
    policy = ScalePolicy(min_replicas=1, max_replicas=5, target_waiting=2, cooldown_s=10, scale_up_window_s=0)
    counts = run(policy, [(40.0, 4.0, 0.3)] * 40, replicas=1)
    assert counts[0] == 2  # the first snapshot above target already decides
    assert counts[:10] == [2] * 10  # cooldown: no second step within 10 s
    assert counts[10] == 3 and counts[20] == 4 and counts[30] == 5
    assert max(counts) == 5  # never past max_replicas


def test_a_sustained_queue_scales_out_within_the_up_window_and_a_short_burst_does_not():
    policy = ScalePolicy(max_replicas=4, scale_up_window_s=15, cooldown_s=0)
    burst = [(10.0, 1.0, 0.2)] * 5 + [(0.0, 1.0, 0.2)] * 30
    assert set(run(policy, burst, replicas=1)) == {1}
    sustained = [(0.0, 1.0, 0.2)] * 5 + [(10.0, 1.0, 0.2)] * 30
    counts = run(policy, sustained, replicas=1)
    first_change = counts.index(2)
    assert first_change - 5 <= 16  # within the 15 s window (+ one tick) of the queue starting; 30 s is the target


def test_steady_noisy_load_changes_at_most_once_per_stabilization_window():
    policy = ScalePolicy(min_replicas=1, max_replicas=8, target_waiting=2, scale_up_window_s=10,
                         scale_down_window_s=30, cooldown_s=0)
    # waiting per replica around the target of 2 on 3 replicas, with spikes and dips
    pattern = [6.0, 9.0, 3.0, 7.0, 5.0, 12.0, 0.0, 6.0]
    loads = [(pattern[i % len(pattern)], 3.0, 0.4) for i in range(300)]
    counts = run(policy, loads, replicas=3)
    changes = [i for i in range(1, len(counts)) if counts[i] != counts[i - 1]]
    window = min(policy.scale_up_window_s, policy.scale_down_window_s)
    assert all(b - a >= window for a, b in zip(changes, changes[1:]))
    assert len(changes) <= 1


def test_idleness_scales_down_step_by_step_to_min_after_the_down_window():
    policy = ScalePolicy(min_replicas=1, max_replicas=4, scale_down_window_s=20, cooldown_s=5, max_step=1)
    counts = run(policy, [(0.0, 0.0, 0.0)] * 60, replicas=4)
    assert counts[:20] == [4] * 20  # the window still remembers proposals of 4... then only zeros
    assert counts[-1] == 1 and 3 in counts and 2 in counts


def test_scale_to_zero_when_idle_and_wake_on_a_held_request():
    policy = ScalePolicy(min_replicas=0, max_replicas=3, scale_down_window_s=10, cooldown_s=30)
    memory = ScalerMemory()
    decision, memory = decide(policy, memory, fleet(0.0, 1, running=1.0, kv=0.1))
    assert decision.desired == 1  # something runs: keep one
    for t in range(1, 12):
        decision, memory = decide(policy, memory, fleet(float(t), 1))
    assert decision.desired == 0 and decision.reason.startswith("down")
    # a request held by the gateway wakes the fleet at once, cooldown or not
    decision, memory = decide(policy, memory, FleetSnapshot(12.0, 0, 0, 0.0, 0.0, 0.0, 1.0))
    assert decision.desired == 1 and decision.reason.startswith("wake")
    assert decision.inputs["held"] == 1.0


def test_kv_usage_above_target_scales_out_without_a_queue():
    policy = ScalePolicy(max_replicas=4, target_kv_usage=0.5, cooldown_s=0)
    decision, _ = decide(policy, ScalerMemory(), fleet(0.0, 2, running=10.0, kv=0.9))
    assert decision.desired == 3 and "kv_usage" in decision.reason


def test_each_decision_carries_its_inputs():
    decision, _ = decide(ScalePolicy(), ScalerMemory(), fleet(0.0, 2, waiting=3.0, running=2.0, kv=0.25, held=1.0))
    assert decision.inputs == {"waiting": 3.0, "running": 2.0, "held": 1.0, "kv_usage": 0.25, "ready": 2.0,
                               "proposal": 2.0}
    assert decision.reason.startswith("hold") and not decision.changed


@pytest.mark.parametrize("bad", [dict(min_replicas=3, max_replicas=2), dict(max_replicas=0), dict(target_waiting=0),
                                 dict(target_kv_usage=1.5), dict(max_step=0), dict(cooldown_s=-1)])
def test_impossible_policies_are_refused(bad):
    with pytest.raises(AutoscalerError):
        ScalePolicy(**bad)


def test_waking_from_zero_ignores_the_up_window_and_the_cooldown():
    policy = ScalePolicy(min_replicas=0, max_replicas=2, scale_up_window_s=60, cooldown_s=60)
    memory = ScalerMemory(last_change_at=0.0)
    decision, memory = decide(policy, memory, FleetSnapshot(1.0, 0, 0, 0.0, 0.0, 0.0, 3.0))
    assert decision.desired == 1 and decision.reason.startswith("wake")
