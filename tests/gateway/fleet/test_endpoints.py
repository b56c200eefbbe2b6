"""Endpoint state and the registry shared by pools."""

from __future__ import annotations

from kvserve.gateway.config import BreakerConfig, EndpointConfig
from kvserve.gateway.fleet.breaker import CircuitBreaker
from kvserve.gateway.fleet.endpoints import Endpoint, EndpointRegistry
from kvserve.gateway.routing.stats import EngineStats


def test_stats_go_stale_after_the_limit():
    e = Endpoint(EndpointConfig(url="http://h:1/prefix"), CircuitBreaker(BreakerConfig()))
    e.engine = EngineStats(1, 2, 0.5, scraped_at=10.0, in_flight_at_scrape=0)
    assert e.stats(10.2, stale_after_s=0.3).engine is not None
    assert e.stats(10.4, stale_after_s=0.3).engine is None
    assert e.base_path == "/prefix" and e.origin.port == 1


def test_routable_needs_health_no_drain_and_a_closed_breaker():
    e = Endpoint(EndpointConfig(url="http://h:1"), CircuitBreaker(BreakerConfig(consecutive_failures=1)))
    assert e.routable(0)
    e.draining = True
    assert not e.routable(0)
    e.draining, e.healthy = False, False
    assert not e.routable(0)
    e.healthy = True
    e.breaker.record(False, 0)
    assert not e.routable(0.1)


def test_registry_shares_endpoints_reports_breaker_changes_and_forgets():
    changes = []
    registry = EndpointRegistry(BreakerConfig(consecutive_failures=1), lambda url, state: changes.append((url, state)))
    a = registry.get_or_create(EndpointConfig(url="http://a:1"))
    assert registry.get_or_create(EndpointConfig(url="http://a:1")) is a
    a.breaker.record(False, 0)
    assert changes == [("http://a:1", "open")]
    registry.get_or_create(EndpointConfig(url="http://b:1"))
    gone = registry.retain(["http://b:1"])
    assert gone == [a] and list(registry.endpoints) == ["http://b:1"]
    registry.set_breaker_config(BreakerConfig(consecutive_failures=9))
    assert registry.endpoints["http://b:1"].breaker.config.consecutive_failures == 9
