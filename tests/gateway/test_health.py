"""Readiness checks: flips after the configured counts; probes of real servers."""

from __future__ import annotations

import asyncio

from kvserve.gateway.breaker import CircuitBreaker
from kvserve.gateway.config import BreakerConfig, EndpointConfig, HealthConfig
from kvserve.gateway.endpoints import Endpoint
from kvserve.gateway.health import check, record_check
from kvserve.gateway.upstream import UpstreamClient

from tests.conftest import free_port


def endpoint(url: str = "http://127.0.0.1:1") -> Endpoint:
    return Endpoint(EndpointConfig(url=url), CircuitBreaker(BreakerConfig()))


def test_unhealthy_after_consecutive_failures_and_back_after_passes():
    config = HealthConfig(unhealthy_after=2, healthy_after=2)
    e = endpoint()
    assert not record_check(e, False, config) and e.healthy
    assert not record_check(e, True, config)  # a pass resets the failure run
    assert not record_check(e, False, config)
    assert record_check(e, False, config) and not e.healthy
    assert not record_check(e, True, config) and not e.healthy
    assert record_check(e, True, config) and e.healthy
    assert e.routable(0.0)


def test_probes_real_servers(upstream):
    ok = upstream()
    failing = upstream(fail_rate=1.0)
    hanging_path = HealthConfig(path="/v1/chat/completions", timeout_s=0.2)  # GET there is a 404

    async def main():
        client = UpstreamClient()
        results = (
            await check(client, endpoint(ok.url), HealthConfig()),
            await check(client, endpoint(failing.url), HealthConfig()),
            await check(client, endpoint(f"http://127.0.0.1:{free_port()}"), HealthConfig()),
            await check(client, endpoint(ok.url), hanging_path),
        )
        await client.close()
        return results

    assert asyncio.run(main()) == (True, False, False, False)
