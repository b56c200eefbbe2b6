"""Redis killed and restarted under a running gateway: fail open or closed, then recover."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.helpers import Metrics, scrape, wait_until

from ..conftest import RedisServer, bearer, chat, fast_config, make_key, one_pool


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


def post(gw, key):
    return httpx.post(gw.url + "/v1/chat/completions", json=chat(), headers=bearer(key), timeout=10)


def gateway_on(gateway, upstream, tmp_path, redis, on_failure):
    up = upstream()
    keys = tmp_path / "keys.yaml"
    key = make_key(keys, requests_per_minute=2)
    config = fast_config(one_pool([up.url]), auth={"enabled": True, "keys_file": str(keys)},
                         redis={"url": redis.url, "on_failure": on_failure, "retry_after_s": 0.2})
    return gateway(config), key


def test_fail_open_then_limits_return_with_redis(upstream, gateway, tmp_path, own_redis, caplog):
    gw, key = gateway_on(gateway, upstream, tmp_path, own_redis, "open")
    assert post(gw, key).status_code == 200
    own_redis.kill()
    down = [post(gw, key) for _ in range(4)]  # over the limit of 2, but nothing can count
    assert [r.status_code for r in down] == [200] * 4
    assert "x-ratelimit-remaining-requests" not in down[0].headers
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'kvserve:gateway_redis_errors_total{op=' in metrics  # admit, or the first request's settle
    assert Metrics(metrics)["kvserve:gateway_limits_unenforced_total"] == 4
    assert any("redis unavailable" in r.getMessage() for r in caplog.records)
    own_redis.start()  # empty: the bucket starts full again
    wait_until(lambda: post(gw, key).status_code == 429, 10, "limits did not come back with redis", step=0.1)


def test_fail_closed_refuses_with_503_and_recovers(upstream, gateway, tmp_path, own_redis):
    gw, key = gateway_on(gateway, upstream, tmp_path, own_redis, "closed")
    own_redis.kill()
    refused = post(gw, key)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "rate_limiter_unavailable"
    own_redis.start()
    wait_until(lambda: post(gw, key).status_code == 200, 10, "no recovery after redis came back", step=0.1)


def test_first_requests_after_a_redis_restart_are_still_limited(upstream, gateway, tmp_path, own_redis):
    gw, key = gateway_on(gateway, upstream, tmp_path, own_redis, "open")
    assert post(gw, key).status_code == 200  # the pool now holds a connection to this redis
    time.sleep(0.3)  # its usage is settled in the background: not while redis is away
    own_redis.kill()
    own_redis.start()  # same port, empty: the bucket is full again
    assert [post(gw, key).status_code for _ in range(3)] == [200, 200, 429]
    assert scrape(gw.url)["kvserve:gateway_limits_unenforced_total"] == 0
