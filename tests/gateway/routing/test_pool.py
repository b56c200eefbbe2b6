"""Pools pick only endpoints that may take traffic."""

from __future__ import annotations

from kvserve.gateway.config import BreakerConfig, EndpointConfig
from kvserve.gateway.fleet.breaker import CircuitBreaker
from kvserve.gateway.fleet.endpoints import Endpoint
from kvserve.gateway.routing.policies import PolicyOptions
from kvserve.gateway.routing.policies import RouteRequest
from kvserve.gateway.routing.pool import Pool


def endpoints(n: int) -> list[Endpoint]:
    config = BreakerConfig(consecutive_failures=1, cooldown_s=10)
    return [Endpoint(EndpointConfig(url=f"http://e{i}:1"), CircuitBreaker(config)) for i in range(n)]


def picks(pool: Pool, n: int = 12, exclude: tuple[str, ...] = ()) -> set[str]:
    return {p.url for p in (pool.pick(RouteRequest(), 0.0, 1.0, exclude) for _ in range(n)) if p is not None}


def test_draining_unhealthy_open_and_excluded_endpoints_get_nothing():
    es = endpoints(5)
    pool = Pool.build(es, "round_robin", PolicyOptions())
    es[0].draining = True
    es[1].healthy = False
    es[2].breaker.record(False, 0.0)  # opens
    assert picks(pool, exclude=(es[3].url,)) == {es[4].url}
    es[4].draining = True
    assert pool.pick(RouteRequest(), 0.0, 1.0, (es[3].url,)) is None


def test_policy_memory_survives_a_rebuild_only_when_policy_and_options_match():
    es = endpoints(2)
    old = Pool.build(es, "prefix_aware", PolicyOptions())
    old.pick(RouteRequest(prompt="p" * 1000), 0.0, 1.0)
    assert Pool.build(es, "prefix_aware", PolicyOptions(), old).state is old.state
    assert Pool.build(es, "prefix_aware", PolicyOptions(prefix_chunk_chars=64), old).state is not old.state
    assert Pool.build(es, "round_robin", PolicyOptions(), old).state is not old.state


def test_add_and_remove():
    es = endpoints(3)
    pool = Pool.build(es[:2], "round_robin", PolicyOptions())
    pool.add(es[2])
    pool.add(es[2])
    assert [e.url for e in pool.endpoints] == [e.url for e in es]
    assert pool.remove(es[0].url) and not pool.remove(es[0].url)
    assert picks(pool) == {es[1].url, es[2].url}
