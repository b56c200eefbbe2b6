"""The series the dashboards and alerts read exist before their first event, and the
gateway's gauges follow the live state: version weights after `/admin/weights`, Redis
health from the background ping while no request needs Redis, and the gateway's own
time before the upstream call."""

from __future__ import annotations

import httpx

from kvserve.gateway.access.ratelimit import REASONS
from kvserve.server.metrics import ServerMetrics
from tests.gateway.conftest import ADMIN_KEY, RedisServer, bearer, chat, fast_config
from tests.helpers import Metrics, free_port, scrape, wait_until


def gateway_config(replica: str, dead: str, redis_url: str) -> dict:
    return fast_config(
        {"fake": {"sticky": False, "versions": {
            "stable": {"weight": 3, "pool": {"endpoints": [replica]}},
            "canary": {"weight": 1, "pool": {"endpoints": [replica, dead]}},
        }}},
        redis={"url": redis_url, "prefix": "series-test", "retry_after_s": 0.1, "probe_interval_s": 0.1},
        cache={"enabled": True},
    )


def test_gateway_series_start_at_zero_and_gauges_follow_the_state(tmp_path, upstream, gateway):
    redis = RedisServer(tmp_path).start()
    try:
        dead = f"http://127.0.0.1:{free_port()}"  # no event ever happens on it
        gw = gateway(gateway_config(upstream().url, dead, redis.url))
        page = scrape(gw.url)

        # before any request: every known label value is there, at zero
        for version in ("stable", "canary"):
            for reason in ("connect", "timeout", "status"):
                assert_zero(page, "kvserve:gateway_retries_total", model="fake", version=version, reason=reason)
            assert_zero(page, "kvserve:gateway_shed_requests_total", model="fake", version=version)
        for state in ("closed", "half_open", "open"):
            assert_zero(page, "kvserve:gateway_breaker_transitions_total", endpoint=dead, state=state)
        assert_zero(page, "kvserve:gateway_breaker_state", endpoint=dead)
        for result in ("hit", "miss", "bypass"):
            assert_zero(page, "kvserve:gateway_cache_requests_total", model="fake", result=result)
        for reason in REASONS.values():
            assert_zero(page, "kvserve:gateway_refused_requests_total", reason=f"limit_{reason}")
        assert page.value("kvserve:gateway_version_weight", version="stable") == 3
        assert page.value("kvserve:gateway_version_weight", version="canary") == 1
        assert page["kvserve:gateway_redis_up"] == 1

        # the admin API moves the weights: the gauge reads the live table
        moved = httpx.post(gw.url + "/admin/weights", json={"model": "fake", "weights": {"canary": 0}},
                           headers=bearer(ADMIN_KEY))
        assert moved.status_code == 200, moved.text
        page = scrape(gw.url)
        assert page.value("kvserve:gateway_version_weight", version="canary") == 0

        # the gateway's own time is observed once per request, and is part of its duration
        answer = httpx.post(gw.url + "/v1/chat/completions", json=chat(content="series"))
        assert answer.status_code == 200, answer.text
        page = scrape(gw.url)
        added = page.value("kvserve:gateway_added_latency_seconds_sum", version="stable")
        assert page.value("kvserve:gateway_added_latency_seconds_count", version="stable") == 1
        assert 0 < added < page.value("kvserve:gateway_request_duration_seconds_sum", version="stable")

        # Redis goes away with no traffic at all: the ping notices, and notices it come back
        redis.kill()
        wait_until(lambda: scrape(gw.url)["kvserve:gateway_redis_up"] == 0, 10, "redis_up stayed 1")
        redis.start()
        wait_until(lambda: scrape(gw.url)["kvserve:gateway_redis_up"] == 1, 10, "redis_up stayed 0")
    finally:
        redis.kill()


def test_a_gateway_without_redis_exports_no_redis_gauge(upstream, gateway):
    gw = gateway(fast_config({"fake": {"pool": {"endpoints": [upstream().url]}}}))
    assert "kvserve:gateway_redis_up" not in httpx.get(gw.url + "/metrics").text


def test_replica_refusals_and_finish_reasons_start_at_zero():
    page = Metrics(ServerMetrics("tiny").render()[0].decode())
    for reason in ("queue_full", "invalid", "timeout", "engine_dead", "shutdown"):
        assert_zero(page, "kvserve:request_rejected_total", model_name="tiny", reason=reason)
    for prefix in ("kvserve:", "vllm:"):
        for reason in ("stop", "length", "abort"):
            assert_zero(page, prefix + "request_success_total", model_name="tiny", finished_reason=reason)


def assert_zero(page: Metrics, name: str, **labels: str) -> None:
    matching = [value for n, have, value in page.samples if n == name and labels.items() <= have.items()]
    assert matching == [0.0], f"{name}{labels}: {matching}"
