"""The fake upstream: OpenAI shapes, vLLM metrics with real counts, runtime knobs."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from kvserve.bench.fake_answers import PrefixCache
from kvserve.bench.fake_upstream import FakeUpstreamConfig, FakeUpstreamServer
from kvserve.gateway.fleet.scrape import parse_metrics
from tests.helpers import wait_until

from .conftest import chat


def test_openai_client_streams_chat_with_usage(upstream):
    server = upstream(num_tokens=5, tokens_per_second=0)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 "
    assert chunks[-1].usage.completion_tokens == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_completions_non_streaming_respects_max_tokens(upstream):
    server = upstream(num_tokens=10)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
    answer = client.completions.create(model="m", prompt="hello", max_tokens=3)
    assert answer.choices[0].text == "tok0 tok1 tok2 "
    assert answer.usage.completion_tokens == 3
    assert client.models.list().data[0].id == "fake-model"


def test_metrics_report_running_and_waiting_requests_as_they_are(upstream):
    server = upstream(num_tokens=20, tokens_per_second=20, max_running=2)  # 1 s per answer

    def call() -> None:
        httpx.post(server.url + "/v1/chat/completions", json=chat(stream=True), timeout=10)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()

    def counts():
        stats = parse_metrics(httpx.get(server.url + "/metrics").content, 0.0, 0)
        return stats.running, stats.waiting

    wait_until(lambda: counts() == (2, 3), 5, "expected 2 running and 3 waiting")
    assert parse_metrics(httpx.get(server.url + "/metrics").content, 0, 0).kv_usage > 0
    for t in threads:
        t.join()
    assert counts() == (0, 0)


def test_runtime_knobs_fail_hang_and_recover(upstream):
    server = upstream()
    url = server.url + "/v1/chat/completions"
    httpx.post(server.url + "/admin/config", json={"fail_rate": 1.0, "status_code": 503})
    failed = httpx.post(url, json=chat())
    assert failed.status_code == 503 and failed.json()["error"]["code"] == 503
    assert httpx.get(server.url + "/ready").status_code == 503
    httpx.post(server.url + "/admin/config", json={"fail_rate": 0.0, "hang": True})
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json=chat(), timeout=0.3)
    httpx.post(server.url + "/admin/config", json={"hang": False})
    assert httpx.post(url, json=chat()).status_code == 200
    assert httpx.post(server.url + "/admin/config", json={"nonsense": 1}).status_code == 400


def test_last_request_shows_forwarded_headers_and_model(upstream):
    server = upstream()
    httpx.post(server.url + "/v1/completions", json={"model": "m1", "prompt": "p", "priority": 2},
               headers={"x-request-id": "rid-1", "traceparent": "00-abc-def-01"})
    last = httpx.get(server.url + "/admin/last_request").json()
    assert last["model"] == "m1" and last["priority"] == 2
    assert last["headers"] == {"x-request-id": "rid-1", "traceparent": "00-abc-def-01"}


def test_simulated_prefix_cache_makes_repeated_prefixes_faster():
    cache = PrefixCache(100)
    prompt = "s" * 640
    assert cache.lookup_and_insert(prompt + "q1") == 0
    assert cache.lookup_and_insert(prompt + "q2") == 640
    config = FakeUpstreamConfig(prefill_chars_per_second=2000, tokens_per_second=0, num_tokens=1)
    with FakeUpstreamServer(config) as server:
        def ttft(content: str) -> float:
            start = time.perf_counter()
            httpx.post(server.url + "/v1/completions", json={"model": "m", "prompt": content})
            return time.perf_counter() - start

        cold, warm = ttft(prompt + "a"), ttft(prompt + "b")
        assert cold > 0.3 and warm < cold / 2
        text = httpx.get(server.url + "/metrics").text
        assert "vllm:prefix_cache_hits_total" in text


def test_workers_share_one_port_and_stop_together(processes):
    import os
    from pathlib import Path

    server = processes.upstream("--workers", "3", "--num-tokens", "4", "--tokens-per-second", "0")
    pid = server.proc.pid
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    assert len(children) == 3
    for _ in range(13):  # a fresh connection each, spread by the kernel; 13: no even split over 3
        answer = httpx.post(server.url + "/v1/chat/completions", json=chat(), timeout=10).json()
        assert answer["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 "
    served = set()
    for _ in range(30):  # each worker counts its own answers: two counts seen, two workers answered
        stats = httpx.get(server.url + "/metrics", timeout=10).text
        served.add(next(line for line in stats.splitlines() if line.startswith("vllm:request_success_total")))
    assert len(served) > 1
    server.stop()
    assert server.proc.returncode == 0
    assert not [c for c in children if os.path.exists(f"/proc/{c}")]
