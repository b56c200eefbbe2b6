"""The store's budget and TTLs, seen from a client: through a real gateway, with the in-memory
store and with Redis."""

from __future__ import annotations

import httpx
import redis

from tests.helpers import scrape, wait_until

from ..conftest import chat, fast_config, one_pool

MB = 1 << 20


def stream(url: str, content: str) -> str:
    return streamed(url, content).headers["x-request-id"]


def streamed(url: str, content: str) -> httpx.Response:
    response = httpx.post(url + "/v1/chat/completions", json=chat(stream=True, content=content), timeout=10)
    assert response.status_code == 200
    return response


def resume(url: str, request_id: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json=chat(stream=True),
                      headers={"x-request-id": request_id, "last-event-id": "0"}, timeout=10)


def test_past_the_budget_the_oldest_finished_streams_go_and_the_metrics_say_so(upstream, gateway):
    up = upstream(num_tokens=200)  # ~45 KB charged per finished (compacted) stream: 1 MiB holds 23
    gw = gateway(fast_config(one_pool([up.url]), memory={"max_bytes": MB},
                             streams={"resumable": True, "finished_ttl_s": 600}))
    answers = [streamed(gw.url, f"question {i}") for i in range(40)]
    ids = [answer.headers["x-request-id"] for answer in answers]

    def all_stored() -> bool:
        metrics = scrape(gw.url)
        return metrics.value("kvserve:gateway_memory_entries", kind="stream") + metrics.value(
            "kvserve:gateway_memory_evictions_total", kind="stream", reason="budget") == len(ids)

    wait_until(all_stored, 5, "streams not recorded")
    metrics = scrape(gw.url)
    assert 0.9 * MB <= metrics.value("kvserve:gateway_memory_bytes") <= MB
    assert metrics.value("kvserve:gateway_memory_budget_bytes") == MB
    assert 22 <= metrics.value("kvserve:gateway_memory_entries", kind="stream") <= 24
    assert resume(gw.url, ids[0]).status_code == 404  # the oldest went first
    latest = resume(gw.url, ids[-1])
    assert latest.status_code == 200 and latest.text.rstrip().endswith("data: [DONE]")
    first_event_end = answers[-1].text.index("\n\n") + 2
    assert latest.text == answers[-1].text[first_event_end:]  # byte for byte what followed event 0


def test_redis_keeps_a_finished_stream_its_short_ttl_and_a_too_long_one_not_at_all(
        upstream, gateway, redis_server, redis_prefix):
    up = upstream(num_tokens=50)
    config = fast_config(one_pool([up.url]), redis={"url": redis_server.url, "prefix": redis_prefix},
                         streams={"resumable": True, "ttl_s": 300, "finished_ttl_s": 20, "max_stream_bytes": 50_000})
    gw = gateway(config)
    client = redis.Redis.from_url(redis_server.url)
    short = stream(gw.url, "short")
    key = f"{redis_prefix}:stream:anonymous:{short}"
    wait_until(lambda: client.get(key + ":done") == b"1", 5, "the stream was not marked finished")
    assert 0 < client.pttl(key) <= 20_000 and 0 < client.pttl(key + ":done") <= 20_000
    long_up = upstream(num_tokens=1000)  # ~200 KB of events
    long_gw = gateway(fast_config(one_pool([long_up.url]), redis={"url": redis_server.url, "prefix": redis_prefix},
                                  streams={"resumable": True, "max_stream_bytes": 50_000}))
    long = stream(long_gw.url, "long")
    wait_until(lambda: not client.exists(f"{redis_prefix}:stream:anonymous:{long}"), 5, "the long stream was kept")
    assert resume(long_gw.url, long).status_code == 404 and resume(gw.url, short).status_code == 200
