"""The monitor keeps stats fresh and health current; stopped scrapes go stale."""

from __future__ import annotations

import asyncio

from kvserve.gateway.config import BreakerConfig, EndpointConfig, HealthConfig, ScrapeConfig
from kvserve.gateway.fleet.breaker import CircuitBreaker
from kvserve.gateway.fleet.endpoints import Endpoint
from kvserve.gateway.fleet.monitor import Monitor
from kvserve.gateway.fleet.upstream import UpstreamClient


def test_scrapes_every_interval_and_marks_a_failing_endpoint_unhealthy(upstream):
    good, bad = upstream(), upstream()
    endpoints = [Endpoint(EndpointConfig(url=s.url), CircuitBreaker(BreakerConfig())) for s in (good, bad)]

    async def main():
        client = UpstreamClient()
        monitor = Monitor(client, ScrapeConfig(interval_s=0.05), HealthConfig(interval_s=0.05, unhealthy_after=2))
        monitor.sync(endpoints)
        await asyncio.sleep(0.3)
        first = endpoints[0].engine.scraped_at
        await asyncio.sleep(0.2)
        assert endpoints[0].engine.scraped_at > first  # refreshed
        bad.app.config.fail_rate = 1.0  # /ready now answers 503
        await asyncio.sleep(0.4)
        assert endpoints[0].healthy and not endpoints[1].healthy
        monitor.sync(endpoints[:1])  # the second one left the config: its loops stop
        assert set(monitor.tasks) == {endpoints[0].url}
        await monitor.close()
        await client.close()

    asyncio.run(main())
    stale_after = 3 * 0.05
    now = endpoints[0].engine.scraped_at + 10
    assert endpoints[0].stats(now, stale_after).engine is None  # unknown, not idle
