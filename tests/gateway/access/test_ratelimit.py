"""The limiter contract, on both backends: the in-memory one and the Redis Lua scripts."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from kvserve.gateway.access.keys import KeyLimits
from kvserve.gateway.access.ratelimit import Charge, MemoryLimiter, Usage, limit_headers, refusal
from kvserve.gateway.access.ratelimit_redis import RedisLimiter
from kvserve.gateway.access_config import RedisConfig, TenantLimits
from kvserve.gateway.store.redis_link import RedisLink


def charge(tokens: int = 10, key: str = "k1", tenant: str = "t1", tenant_limits: TenantLimits = TenantLimits(),
           **limits: Any) -> Charge:
    return Charge(key, tenant, "chat", uuid.uuid4().hex, tokens, KeyLimits(**limits), tenant_limits)


@pytest.fixture(params=["memory", "redis"])
def run(request: pytest.FixtureRequest, redis_prefix: str) -> Any:
    """run(scenario): awaits scenario(limiter) on a fresh limiter of each backend."""

    def go(scenario: Any) -> Any:
        async def main() -> Any:
            if request.param == "memory":
                return await scenario(MemoryLimiter())
            server = request.getfixturevalue("redis_server")
            link = RedisLink(RedisConfig(url=server.url, prefix=redis_prefix), lambda op: None)
            try:
                return await scenario(RedisLimiter(link, 60))
            finally:
                await link.close()

        return asyncio.run(main())

    return go


def test_requests_per_minute_admits_exactly_the_limit(run):
    async def scenario(limiter):
        decisions = [await limiter.admit(charge(requests_per_minute=3)) for _ in range(5)]
        return decisions

    decisions = run(scenario)
    assert [d.code for d in decisions] == [0, 0, 0, 2, 2]
    assert [d.remaining_requests for d in decisions[:3]] == [2, 1, 0]
    assert 19 <= decisions[3].retry_after_s <= 21  # one request refills in 60/3 s


def test_tokens_are_charged_at_admission_and_reconciled_with_real_usage(run):
    async def scenario(limiter):
        first = charge(40, tokens_per_minute=100)
        out = [await limiter.admit(first), await limiter.admit(charge(40, tokens_per_minute=100))]
        out.append(await limiter.admit(charge(40, tokens_per_minute=100)))  # 20 left: refused
        await limiter.settle(first, out[0], Usage(5, 5))  # used 10 of the 40 charged: 30 back
        out.append(await limiter.admit(charge(40, tokens_per_minute=100)))
        return out

    a, b, refused, after = run(scenario)
    assert (a.code, b.code, refused.code, after.code) == (0, 0, 3, 0)
    assert a.remaining_tokens == 60 and b.remaining_tokens == 20
    assert 9 <= after.remaining_tokens <= 12  # 20 + 30 refunded - 40 (+ a little refill)


def test_concurrency_slots_are_freed_by_settle(run):
    async def scenario(limiter):
        c1, c2, c3 = (charge(concurrency=2) for _ in range(3))
        d1, _, d3 = await limiter.admit(c1), await limiter.admit(c2), await limiter.admit(c3)
        await limiter.settle(c1, d1, Usage(1, 1))
        return d3, await limiter.admit(c3)

    refused, admitted = run(scenario)
    assert refused.code == 1 and admitted.code == 0


def test_daily_budget_refuses_once_spent_with_a_clear_message(run):
    async def scenario(limiter):
        charges = [charge(30, daily_tokens=50) for _ in range(3)]
        return charges[2], [await limiter.admit(c) for c in charges]

    last, decisions = run(scenario)
    assert [d.code for d in decisions] == [0, 0, 6]
    error = refusal(last, decisions[2])
    assert error.status == 429 and "daily token budget of 50" in error.message
    assert error.code == "insufficient_quota"


def test_tenant_limits_are_shared_by_its_keys(run):
    tenant = TenantLimits(requests_per_minute=2)

    async def scenario(limiter):
        return [(await limiter.admit(charge(key=f"k{i}", tenant_limits=tenant))).code for i in range(3)]

    assert run(scenario) == [0, 0, 4]


def test_a_request_larger_than_a_minute_of_tokens_is_refused(run):
    async def scenario(limiter):
        return await limiter.admit(charge(500, tokens_per_minute=100))

    assert run(scenario).code == 7


def test_usage_is_totalled_per_tenant_key_and_model(run):
    async def scenario(limiter):
        for hit in (False, True):
            c = charge(10)
            await limiter.settle(c, await limiter.admit(c), Usage(7, 3, cache_hit=hit))
        return await limiter.usage()

    assert run(scenario) == [{"tenant": "t1", "key_id": "k1", "model": "chat", "requests": 2,
                              "prompt_tokens": 14, "completion_tokens": 6, "cache_hits": 1}]


def test_headers_follow_openai_names():
    c = charge(requests_per_minute=10, tokens_per_minute=1000)

    async def scenario():
        return await MemoryLimiter().admit(c)

    headers = dict(limit_headers(c, asyncio.run(scenario())))
    assert headers[b"x-ratelimit-limit-requests"] == b"10"
    assert headers[b"x-ratelimit-remaining-requests"] == b"9"
    assert headers[b"x-ratelimit-remaining-tokens"] == b"990"
    assert headers[b"x-ratelimit-reset-requests"].endswith(b"s")
