"""Readiness checks: flips after the configured counts; probes of real servers."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from kvserve.gateway.config import BreakerConfig, EndpointConfig, HealthConfig
from kvserve.gateway.fleet.breaker import CircuitBreaker
from kvserve.gateway.fleet.endpoints import Endpoint
from kvserve.gateway.fleet.health import check, record_check
from kvserve.gateway.fleet.upstream import UpstreamClient
from tests.helpers import free_port, wait_until

from ..conftest import chat, fast_config, one_pool


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


def test_a_failed_check_while_requests_are_answered_does_not_count():
    config = HealthConfig(unhealthy_after=2)
    e = endpoint()
    for _ in range(5):
        e.answers += 1  # traffic got answers since the last check
        assert not record_check(e, False, config) and e.healthy
    e.in_flight = 1  # a request waits on it: its outcome is not known yet
    assert not record_check(e, False, config) and not record_check(e, False, config)
    e.in_flight = 0
    assert not record_check(e, False, config)  # no answers since, nothing waiting: counts
    assert record_check(e, False, config) and not e.healthy


def test_a_busy_replica_with_a_slow_ready_stays_in_rotation_and_a_dead_one_is_ejected(upstream, gateway):
    busy = upstream(name="busy", num_tokens=4, tokens_per_second=40)
    dead = upstream(name="dead")
    gw = gateway(fast_config(one_pool([busy.url, dead.url]),
                             health={"interval_s": 0.1, "timeout_s": 0.1, "unhealthy_after": 3}))
    stop = threading.Event()
    statuses: list[int] = []

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                statuses.append(client.post(gw.url + "/v1/chat/completions", json=chat()).status_code)

    workers = [threading.Thread(target=load) for _ in range(8)]
    for worker in workers:
        worker.start()
    wait_until(lambda: len(statuses) > 8, 10, "no traffic")
    httpx.post(busy.url + "/admin/config", json={"ready_delay": 0.3})  # its probes time out from now on
    dead.stop()
    seen_busy_healthy = []
    try:
        wait_until(lambda: not gw.state.registry.endpoints[dead.url].healthy, 10, "the dead replica stayed in")
        deadline = time.monotonic() + 2.0  # 20 failed probes of the busy one
        while time.monotonic() < deadline:
            seen_busy_healthy.append(gw.state.registry.endpoints[busy.url].healthy)
            time.sleep(0.02)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert all(seen_busy_healthy) and len(seen_busy_healthy) > 50
    assert statuses.count(200) > 20
