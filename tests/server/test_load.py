"""Under load and when clients misbehave: many streams, disconnects, timeouts, a full queue.

These tests read the server's own /metrics, so they run on servers of their own.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from tests.server.conftest import start_server

MESSAGES = [{"role": "user", "content": "Continuous batching schedules running requests first."}]


@pytest.fixture(scope="module")
def quiet_server(slower_llama, tmp_path_factory):
    proc = start_server(tmp_path_factory, slower_llama, "--served-model-name", "tiny", "--max-num-seqs", "32")
    yield proc
    proc.stop()


def test_64_concurrent_streams_finish_with_right_usage_and_metrics_return_to_zero(quiet_server):
    before = quiet_server.metrics()

    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[int, int, str]:
        stream = await client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=8 + i % 8, stream=True, temperature=0.8, seed=i,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        text, usage = [], None
        async for chunk in stream:
            usage = chunk.usage or usage
            text.extend(c.delta.content or "" for c in chunk.choices)
        return usage.completion_tokens, 8 + i % 8, "".join(text)

    async def run() -> list[tuple[int, int, str]]:
        async with openai.AsyncOpenAI(base_url=quiet_server.url + "/v1", api_key="x", max_retries=0,
                                      timeout=300) as client:
            return await asyncio.gather(*(one(client, i) for i in range(64)))

    results = asyncio.run(run())
    assert all(got == wanted for got, wanted, _ in results)
    assert all(text for _, _, text in results)
    after = quiet_server.wait_idle()
    assert after["vllm:num_requests_running"] == 0 and after["vllm:num_requests_waiting"] == 0
    assert after["vllm:kv_cache_usage_perc"] == 0
    assert after["vllm:request_success_total"] - before.get("vllm:request_success_total", 0) == 64
    generated = after["vllm:generation_tokens_total"] - before.get("vllm:generation_tokens_total", 0)
    assert generated == sum(wanted for _, wanted, _ in results)
    assert after["kvserve:time_to_first_token_seconds_count"] >= 64


def test_client_disconnect_aborts_and_frees_kv_blocks(quiet_server):
    quiet_server.wait_idle()
    before = quiet_server.metrics()
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 1000, "stream": True, "ignore_eos": True}
    with httpx.Client(base_url=quiet_server.url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()  # kept open: leaving a loop over it would close the connection
            events = [line for line in (next(lines) for _ in range(8)) if line.startswith("data:")]
            assert len(events) == 4  # data lines and blank separators
            during = quiet_server.metrics()
    # the request held blocks while it streamed, and none once the client had gone
    assert during["vllm:num_requests_running"] == 1 and during["vllm:kv_cache_usage_perc"] > 0
    start = time.monotonic()
    after = quiet_server.wait_idle(timeout=5.0)
    assert after["vllm:kv_cache_usage_perc"] == 0 and after["vllm:num_requests_running"] == 0
    assert time.monotonic() - start < 5.0
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert generated < 1000  # it did not run to the end
    aborted = _aborted(quiet_server)
    assert aborted >= 1


def test_non_streaming_disconnect_aborts_too(quiet_server):
    before = quiet_server.wait_idle()
    aborted = _aborted(quiet_server)
    body = {"model": "tiny", "prompt": "Hello", "max_tokens": 1000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(quiet_server.url + "/v1/completions", json=body, timeout=0.5)
    after = quiet_server.wait_idle(timeout=5.0)
    assert after["vllm:kv_cache_usage_perc"] == 0 and after["vllm:num_requests_running"] == 0
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] < 1000
    assert _aborted(quiet_server) == aborted + 1


def test_request_timeout_ends_the_request_with_a_clear_error(quiet_server):
    body = {"model": "tiny", "prompt": "Hello", "max_tokens": 1000, "ignore_eos": True, "request_timeout": 0.2}
    response = httpx.post(quiet_server.url + "/v1/completions", json=body, timeout=60)
    assert response.status_code == 408
    error = response.json()["error"]
    assert error["code"] == "request_timeout" and "0.2 s" in error["message"]
    streamed = httpx.post(quiet_server.url + "/v1/completions", json={**body, "stream": True}, timeout=60)
    events = [line.removeprefix("data: ") for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "request_timeout"
    assert quiet_server.wait_idle(timeout=5.0)["vllm:kv_cache_usage_perc"] == 0


def _aborted(server) -> float:
    return server.metrics().value("vllm:request_success_total", finished_reason="abort")


@pytest.fixture(scope="module")
def tight_server(slower_llama, tmp_path_factory):
    proc = start_server(tmp_path_factory, slower_llama, "--max-num-seqs", "1", "--max-waiting", "1")
    yield proc
    proc.stop()


def test_full_waiting_queue_is_503_with_retry_after(tight_server):
    """One request runs, one waits, every further one is turned away at once with 503 and
    Retry-After; the queue is staged step by step so the outcome does not depend on timing."""
    import threading
    from tests.helpers import wait_until

    tight_server.wait_idle()
    long_body = {"prompt": "Hello", "max_tokens": 2000, "ignore_eos": True, "stream": True}
    stop, waiting_done = threading.Event(), []

    def run_long() -> None:
        with httpx.stream("POST", tight_server.url + "/v1/completions", json=long_body, timeout=120) as response:
            for _ in response.iter_lines():
                if stop.is_set():
                    return  # leaving closes the connection: the server aborts the request

    def run_waiting() -> None:
        body = {"prompt": "Hello", "max_tokens": 40, "ignore_eos": True}
        waiting_done.append(httpx.post(tight_server.url + "/v1/completions", json=body, timeout=120))

    running = threading.Thread(target=run_long)
    running.start()
    try:
        wait_until(lambda: tight_server.metrics()["vllm:num_requests_running"] == 1, 30, "the long request never ran")
        queued = threading.Thread(target=run_waiting)
        queued.start()
        wait_until(lambda: tight_server.metrics()["vllm:num_requests_waiting"] == 1, 30, "the second never queued")
        body = {"prompt": "Hello", "max_tokens": 40, "ignore_eos": True}
        rejected = [httpx.post(tight_server.url + "/v1/completions", json=body, timeout=30) for _ in range(3)]
    finally:
        stop.set()
        running.join(60)
    queued.join(60)
    assert [r.status_code for r in rejected] == [503, 503, 503]
    assert all(r.headers["Retry-After"] == "1" for r in rejected)
    assert {r.json()["error"]["code"] for r in rejected} == {"queue_full"}
    assert waiting_done[0].status_code == 200  # the waiting one ran once the long one left
    assert waiting_done[0].json()["usage"]["completion_tokens"] == 40
    assert tight_server.wait_idle()["vllm:num_requests_waiting"] == 0


def test_ready_answers_fast_while_the_engine_is_busy(quiet_server):
    """/ready reads state the HTTP process has; it never waits for the engine between two
    steps (a gateway's 1 s health check once timed out on a busy replica)."""
    import statistics
    import threading

    body = {"prompt": "Paged attention", "max_tokens": 400, "ignore_eos": True, "n": 32, "stream": True}
    stop = threading.Event()

    def generate() -> None:
        with httpx.stream("POST", quiet_server.url + "/v1/completions", json=body, timeout=300) as response:
            for _ in response.iter_lines():
                if stop.is_set():
                    return  # leaving closes the connection: the server aborts the request

    load = threading.Thread(target=generate)
    load.start()
    try:
        deadline = time.monotonic() + 60
        while quiet_server.metrics()["vllm:num_requests_running"] < 32 and time.monotonic() < deadline:
            time.sleep(0.05)
        latencies = []
        with httpx.Client(base_url=quiet_server.url, timeout=5.0) as client:
            for _ in range(20):
                start = time.perf_counter()
                assert client.get("/ready").status_code == 200
                latencies.append(time.perf_counter() - start)
                time.sleep(0.02)
        busy = quiet_server.metrics()["vllm:num_requests_running"]
    finally:
        stop.set()
        load.join(60)
    assert busy == 32  # the engine was still generating the whole batch while /ready answered
    assert statistics.median(latencies) < 0.05, latencies
    quiet_server.wait_idle()
