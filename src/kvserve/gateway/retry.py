"""Retry rules: what may be retried, how long to back off, and the overall deadline."""

from __future__ import annotations

import random

from kvserve.gateway.config import RetryConfig

# why an attempt failed before any byte reached the client
CONNECT = "connect"  # could not connect, or the connection broke before an answer
TIMEOUT = "timeout"  # no first byte within the timeout
STATUS = "status"  # a retryable status (502/503/504 by default)


class RetryPolicy:
    """Attempts go to different endpoints; the backoff before attempt n+1 is drawn
    uniformly from [0, min(backoff_max_s, backoff_base_s * 2**n)] ("full jitter"), and no
    attempt starts after the deadline. Nothing is retried once bytes reached the client."""

    def __init__(self, config: RetryConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.statuses = frozenset(config.retry_statuses)
        self.rng = rng or random.Random()

    def retryable_status(self, status: int) -> bool:
        return status in self.statuses

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        cap = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (attempt - 1))
        return self.rng.uniform(0.0, cap)

    def may_retry(self, attempts: int, now: float, deadline: float) -> bool:
        return attempts < self.config.max_attempts and now < deadline
