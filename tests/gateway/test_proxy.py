"""Retries, timeouts, breakers and replicas that die: real processes on loopback."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.helpers import scrape, wait_until

from .conftest import chat, fast_config, one_pool


def test_503s_are_retried_on_another_endpoint(upstream, gateway):
    bad, good = upstream(fail_rate=1.0, status_code=503, name="bad"), upstream(name="good")
    config = fast_config(one_pool([bad.url, good.url]), breaker={"consecutive_failures": 1000, "min_requests": 1000},
                         health={"path": "/v1/models"})  # /ready would fail too and take bad out at once
    gw = gateway(config)
    with httpx.Client(base_url=gw.url) as client:
        responses = [client.post("/v1/chat/completions", json=chat()) for _ in range(10)]
    assert [r.status_code for r in responses] == [200] * 10
    assert {r.headers["x-upstream-name"] for r in responses} == {"good"}
    assert scrape(gw.url).value("kvserve:gateway_retries_total", model="fake", reason="status", version="default") >= 4


def test_when_every_attempt_fails_the_last_upstream_error_is_answered(upstream, gateway):
    ups = [upstream(fail_rate=1.0, status_code=503) for _ in range(4)]
    gw = gateway(fast_config(one_pool([u.url for u in ups]), retry={"max_attempts": 3, "backoff_base_s": 0.001},
                             health={"path": "/v1/models"}))
    response = httpx.post(gw.url + "/v1/chat/completions", json=chat())
    assert response.status_code == 503 and response.json()["error"]["message"] == "injected failure"
    assert sum(u.app.counters.requests for u in ups) == 0
    assert sum(1 for u in ups if u.app.last_request) == 3  # three attempts, three endpoints


def test_a_hanging_endpoint_times_out_before_the_first_byte_and_the_request_moves_on(upstream, gateway):
    hung, good = upstream(hang=True, name="hung"), upstream(name="good")
    config = fast_config(one_pool([hung.url, good.url]), timeouts={"connect_s": 1, "first_byte_s": 0.4, "idle_s": 5})
    gw = gateway(config)
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        start = time.perf_counter()
        responses = [client.post("/v1/chat/completions", json=chat()) for _ in range(4)]
        elapsed = time.perf_counter() - start
    assert all(r.status_code == 200 and r.headers["x-upstream-name"] == "good" for r in responses)
    assert elapsed < 4 * 0.4 + 2
    wait_until(lambda: hung.app.counters.running == 0, 3, "the timed-out upstream requests were not dropped")


def test_only_hanging_endpoints_give_a_504_not_a_hang(upstream, gateway):
    hung = upstream(hang=True)
    gw = gateway(fast_config(one_pool([hung.url]), timeouts={"connect_s": 1, "first_byte_s": 0.3, "idle_s": 5}))
    start = time.perf_counter()
    response = httpx.post(gw.url + "/v1/chat/completions", json=chat(), timeout=10)
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
    assert time.perf_counter() - start < 2


def test_with_no_healthy_endpoint_the_answer_is_a_fast_503(upstream, gateway):
    down = upstream()
    down.stop()
    gw = gateway(fast_config(one_pool([down.url])))
    wait_until(lambda: not gw.state.table.endpoints()[0].healthy, 5, "health checks did not notice")
    start = time.perf_counter()
    response = httpx.post(gw.url + "/v1/chat/completions", json=chat(), timeout=10)
    assert response.status_code == 503 and response.json()["error"]["code"] == "no_healthy_endpoint"
    assert time.perf_counter() - start < 1


def test_nothing_is_retried_once_bytes_reached_the_client(upstream, gateway):
    dying, spare = upstream(num_tokens=50, tokens_per_second=20, name="dying"), upstream(name="spare")
    gw = gateway(fast_config(one_pool([dying.url, spare.url], "round_robin")))
    gw.state.table.models["fake"].versions["default"].pool.state.counter = 1  # next pick: dying
    lines = []
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=chat(stream=True), timeout=10) as response:
        assert response.headers["x-upstream-name"] == "dying"
        for line in response.iter_lines():
            lines.append(line)
            if len(lines) == 3:
                threading.Thread(target=dying.stop).start()
    assert any('"upstream_error"' in line for line in lines)  # the stream ends with an error event
    assert not spare.app.last_request  # never retried elsewhere


def test_a_breaker_opens_on_a_failing_endpoint_and_closes_when_it_recovers(upstream, gateway):
    flaky, good = upstream(name="flaky"), upstream(name="good")
    config = fast_config(one_pool([flaky.url, good.url]), breaker={"consecutive_failures": 2, "cooldown_s": 0.5},
                         health={"interval_s": 10})  # only the breaker reacts here
    gw = gateway(config)
    flaky.app.config.fail_rate, flaky.app.config.status_code = 1.0, 500  # 500: passed through, counted as failure
    with httpx.Client(base_url=gw.url) as client:
        first = [client.post("/v1/chat/completions", json=chat()).status_code for _ in range(6)]
        assert first.count(500) == 2  # then the breaker is open and traffic goes to the good one
        breaker = next(e for e in gw.state.table.endpoints() if e.url == flaky.url).breaker
        assert breaker.state.value == "open"
        flaky.app.config.fail_rate = 0.0
        time.sleep(0.6)
        names = Counter(client.post("/v1/chat/completions", json=chat()).headers["x-upstream-name"]
                        for _ in range(10))
    assert breaker.state.value == "closed" and names["flaky"] >= 3
    assert scrape(gw.url).value("kvserve:gateway_breaker_transitions_total", endpoint=flaky.url, state="closed") == 1


def test_replicas_killed_mid_run_lose_only_requests_already_streaming(processes, gateway):
    ups = [processes.upstream("--num-tokens", "16", "--tokens-per-second", "40", "--name", n) for n in "abc"]
    config = fast_config(one_pool([u.url for u in ups], "least_request"),
                         breaker={"consecutive_failures": 2, "cooldown_s": 1.0})
    gw = gateway(config)
    results: list[tuple[int, str, bool]] = []  # (status, upstream, complete)

    def one(i: int) -> None:
        try:
            with httpx.stream("POST", gw.url + "/v1/chat/completions", json=chat(stream=True), timeout=20) as r:
                body = "".join(r.iter_text())
                results.append((r.status_code, r.headers.get("x-upstream-name", ""), body.endswith("[DONE]\n\n")))
        except httpx.HTTPError:
            results.append((0, "", False))

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(120)]
        time.sleep(1.0)
        ups[1].kill()  # mid-run, while requests stream from it
        for f in futures:
            f.result()
    broken = [r for r in results if not (r[0] == 200 and r[2])]
    assert len(broken) <= 8, broken  # at most the ones that were streaming from b when it died
    assert all(name == "b" for _, name, _ in broken if name)
    endpoint_b = next(e for e in gw.state.table.endpoints() if e.url == ups[1].url)
    assert not endpoint_b.healthy or endpoint_b.breaker.state.value != "closed"

    revived = processes.upstream("--num-tokens", "2", "--tokens-per-second", "0", "--name", "b", port=ups[1].port)
    wait_until(lambda: endpoint_b.healthy, 5, "health checks did not see b come back")
    with httpx.Client(base_url=gw.url) as client:
        names = Counter(client.post("/v1/chat/completions", json=chat()).headers["x-upstream-name"]
                        for _ in range(30))
    assert names["b"] > 0 and endpoint_b.breaker.state.value == "closed"
    assert revived.proc is not None
