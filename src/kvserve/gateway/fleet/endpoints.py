"""Endpoints: one upstream server each, with its counters, breaker, health and latest stats."""

from __future__ import annotations

from urllib.parse import urlsplit
from typing import Callable, Iterable

from kvserve.gateway.config import BreakerConfig, EndpointConfig
from kvserve.gateway.fleet.breaker import CircuitBreaker
from kvserve.gateway.fleet.upstream import Origin
from kvserve.gateway.routing.stats import EndpointStats, EngineStats


class Endpoint:
    """One upstream server. The gateway mutates it; policies only see EndpointStats."""

    def __init__(self, config: EndpointConfig, breaker: CircuitBreaker) -> None:
        self.url = config.url
        self.config = config
        self.origin = Origin.parse(config.url)
        self.base_path = urlsplit(config.url).path  # a path prefix in the URL, e.g. /serving
        self.breaker = breaker
        self.in_flight = 0
        self.engine: EngineStats | None = None
        self.healthy = True  # until the readiness checks say otherwise
        self.draining = False  # set by the admin API: no new requests, in-flight ones finish
        self.health_failures = 0  # consecutive failed readiness checks
        self.health_successes = 0  # consecutive passed readiness checks
        self.answers = 0  # requests that got a first byte or finished cleanly here (proof of life)
        self.answers_at_check = 0  # `answers` at the last readiness check

    def routable(self, now: float) -> bool:
        return self.healthy and not self.draining and self.breaker.allows(now)

    def stats(self, now: float, stale_after_s: float) -> EndpointStats:
        engine = self.engine
        if engine is not None and now - engine.scraped_at > stale_after_s:
            engine = None
        return EndpointStats(self.url, self.in_flight, engine)

    def describe(self, now: float, stale_after_s: float) -> dict[str, object]:
        """A JSON-able view for the admin API."""
        engine = self.stats(now, stale_after_s).engine
        return {
            "url": self.url,
            "in_flight": self.in_flight,
            "healthy": self.healthy,
            "draining": self.draining,
            "breaker": self.breaker.state.value,
            "waiting": None if engine is None else engine.waiting,
            "running": None if engine is None else engine.running,
            "kv_usage": None if engine is None else engine.kv_usage,
            "generation_tokens": None if engine is None else engine.generation_tokens,
            "prefix_cache_hits": None if engine is None else engine.prefix_hits,
            "prefix_cache_queries": None if engine is None else engine.prefix_queries,
        }


class EndpointRegistry:
    """Every endpoint the gateway knows, by URL. Pools share Endpoint objects, so a URL
    listed in two pools has one breaker and one in-flight count, and a config reload
    keeps the state of the endpoints it still lists."""

    def __init__(self, breaker_config: BreakerConfig, on_breaker_change: Callable[[str, str], None]) -> None:
        self.breaker_config = breaker_config
        self.on_breaker_change = on_breaker_change
        self.endpoints: dict[str, Endpoint] = {}

    def get_or_create(self, config: EndpointConfig) -> Endpoint:
        endpoint = self.endpoints.get(config.url)
        if endpoint is None:
            url = config.url
            breaker = CircuitBreaker(self.breaker_config, lambda _old, new: self.on_breaker_change(url, new.value))
            endpoint = self.endpoints[url] = Endpoint(config, breaker)
        elif endpoint.config != config:
            endpoint.config = config
        return endpoint

    def retain(self, urls: Iterable[str]) -> list[Endpoint]:
        """Forget endpoints not in `urls`; returns the forgotten ones (their in-flight requests go on)."""
        keep = set(urls)
        gone = [e for url, e in self.endpoints.items() if url not in keep]
        for endpoint in gone:
            del self.endpoints[endpoint.url]
        return gone

    def set_breaker_config(self, config: BreakerConfig) -> None:
        self.breaker_config = config
        for endpoint in self.endpoints.values():
            endpoint.breaker.config = config
