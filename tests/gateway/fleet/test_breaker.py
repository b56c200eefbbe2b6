"""Circuit breaker: closed -> open -> half-open -> closed, on a fake clock."""

from __future__ import annotations

from kvserve.gateway.config import BreakerConfig
from kvserve.gateway.fleet.breaker import BreakerState, CircuitBreaker


def breaker(**overrides) -> tuple[CircuitBreaker, list[tuple[str, str]]]:
    changes: list[tuple[str, str]] = []
    config = BreakerConfig(**{"consecutive_failures": 3, "cooldown_s": 5, "min_requests": 10, **overrides})
    return CircuitBreaker(config, lambda old, new: changes.append((old.value, new.value))), changes


def test_opens_after_consecutive_failures_and_takes_no_traffic():
    b, changes = breaker()
    for t in range(2):
        b.record(False, t)
    assert b.allows(2) and b.state is BreakerState.CLOSED
    b.record(True, 2)  # a success resets the run
    for t in range(3, 6):
        b.record(False, t)
    assert b.state is BreakerState.OPEN and not b.allows(6)
    assert changes == [("closed", "open")]


def test_opens_on_error_rate_over_the_window_without_a_long_run_of_failures():
    b, _ = breaker(consecutive_failures=100, error_rate=0.5, window_s=10, min_requests=10)
    for i in range(10):
        b.record(i % 3 != 0, i * 0.1)  # a third fail: under the rate
    assert b.state is BreakerState.CLOSED
    for i in range(10):
        b.record(i % 4 == 0, 1 + i * 0.1)  # three quarters fail
    assert b.state is BreakerState.OPEN


def test_old_outcomes_leave_the_window():
    b, _ = breaker(consecutive_failures=100, error_rate=0.5, window_s=1, min_requests=4)
    for i in range(3):
        b.record(False, i * 0.01)
    b.record(True, 5.0)
    b.record(True, 5.1)
    b.record(False, 5.2)
    b.record(True, 5.3)  # only the last four count: 1 of 4 failed
    assert b.state is BreakerState.CLOSED


def test_half_open_after_cooldown_admits_limited_trials_and_a_success_closes():
    b, changes = breaker(half_open_requests=1)
    for t in range(3):
        b.record(False, t)
    assert not b.allows(6.9)
    assert b.allows(7.1) and b.state is BreakerState.HALF_OPEN
    trial = b.on_dispatch()
    assert trial and not b.allows(7.2)  # the one trial slot is taken
    b.record(True, 7.5, trial)
    assert b.state is BreakerState.CLOSED and b.allows(7.6)
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_failed_trial_opens_again_for_a_new_cooldown():
    b, _ = breaker()
    for t in range(3):
        b.record(False, t)
    assert b.allows(8)
    trial = b.on_dispatch()
    b.record(False, 8.5, trial)
    assert b.state is BreakerState.OPEN
    assert not b.allows(13.0) and b.allows(13.6)


def test_an_abandoned_trial_frees_its_slot():
    b, _ = breaker()
    for t in range(3):
        b.record(False, t)
    b.allows(10)
    trial = b.on_dispatch()
    assert not b.allows(10.1)
    b.abandon(trial)
    assert b.allows(10.2) and b.state is BreakerState.HALF_OPEN
