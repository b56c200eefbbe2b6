"""Per-endpoint circuit breaker: plain bookkeeping, driven by the caller's clock."""

from __future__ import annotations

import enum
from collections import deque
from typing import Callable

from kvserve.gateway.config import BreakerConfig


class BreakerState(str, enum.Enum):
    CLOSED = "closed"  # traffic flows
    OPEN = "open"  # no traffic until the cooldown ends
    HALF_OPEN = "half_open"  # a few trial requests decide between closed and open


StateListener = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Opens after `consecutive_failures` failures in a row, or when the failure fraction
    over the last `window_s` exceeds `error_rate` (once `min_requests` were seen). After
    `cooldown_s` it lets `half_open_requests` trial requests through: a trial success
    closes it, a trial failure opens it again. Times are seconds of one monotonic clock.
    """

    def __init__(self, config: BreakerConfig, on_change: StateListener | None = None) -> None:
        self.config = config
        self.state = BreakerState.CLOSED
        self.on_change = on_change
        self.opened_at = 0.0
        self.consecutive = 0
        self.trials = 0  # trial requests in flight while half-open
        self._window: deque[tuple[float, bool]] = deque()  # (time, failed)
        self._failures = 0

    def allows(self, now: float) -> bool:
        """Whether a request may be sent now (moves open -> half-open after the cooldown)."""
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.config.cooldown_s:
            self._move(BreakerState.HALF_OPEN)
        if self.state is BreakerState.CLOSED:
            return True
        return self.state is BreakerState.HALF_OPEN and self.trials < self.config.half_open_requests

    def on_dispatch(self) -> bool:
        """Call when a request is sent; returns True when it is a half-open trial."""
        if self.state is BreakerState.HALF_OPEN:
            self.trials += 1
            return True
        return False

    def abandon(self, trial: bool) -> None:
        """The request ended without a verdict (the client left): free its trial slot."""
        if trial:
            self.trials = max(0, self.trials - 1)

    def record(self, success: bool, now: float, trial: bool = False) -> None:
        """Record one request's outcome (trial: the value on_dispatch returned)."""
        if trial:
            self.trials = max(0, self.trials - 1)
        if self.state is BreakerState.HALF_OPEN:
            if not success:
                self._open(now)
            elif trial:
                self._reset()
            return
        self._count(not success, now)
        if self.state is BreakerState.CLOSED and self._should_open():
            self._open(now)

    def _count(self, failed: bool, now: float) -> None:
        self.consecutive = self.consecutive + 1 if failed else 0
        self._window.append((now, failed))
        self._failures += failed
        horizon = now - self.config.window_s
        while self._window and self._window[0][0] < horizon:
            self._failures -= self._window.popleft()[1]

    def _should_open(self) -> bool:
        if self.consecutive >= self.config.consecutive_failures:
            return True
        total = len(self._window)
        return total >= self.config.min_requests and self._failures / total > self.config.error_rate

    def _open(self, now: float) -> None:
        self.opened_at = now
        self._move(BreakerState.OPEN)

    def _reset(self) -> None:
        self.consecutive = 0
        self._window.clear()
        self._failures = 0
        self._move(BreakerState.CLOSED)

    def _move(self, state: BreakerState) -> None:
        old, self.state = self.state, state
        if state is not BreakerState.HALF_OPEN:
            self.trials = 0
        if self.on_change is not None and old is not state:
            self.on_change(old, state)
