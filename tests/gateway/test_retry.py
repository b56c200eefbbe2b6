"""Retry rules."""

from __future__ import annotations

import random

from kvserve.gateway.config import RetryConfig
from kvserve.gateway.retry import RetryPolicy


def test_backoff_is_jittered_below_an_exponential_cap():
    policy = RetryPolicy(RetryConfig(backoff_base_s=0.1, backoff_max_s=0.3), random.Random(0))
    first = [policy.backoff(1) for _ in range(200)]
    third = [policy.backoff(3) for _ in range(200)]
    assert all(0 <= b <= 0.1 for b in first) and max(first) > 0.08 and min(first) < 0.02
    assert all(0 <= b <= 0.3 for b in third) and max(third) > 0.25


def test_attempts_and_deadline_bound_retries():
    policy = RetryPolicy(RetryConfig(max_attempts=3))
    assert policy.may_retry(1, now=5, deadline=10) and policy.may_retry(2, 5, 10)
    assert not policy.may_retry(3, 5, 10)
    assert not policy.may_retry(1, 10, 10)
    assert policy.retryable_status(503) and not policy.retryable_status(500)
