"""The gateway end to end: real fake upstreams and a real gateway on loopback ports."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter

import httpx
import openai
import pytest

from tests.helpers import Metrics, scrape, wait_until

from .conftest import ADMIN_KEY, chat, fast_config, one_pool


def client_for(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)


def test_streaming_through_the_gateway_with_the_openai_client(upstream, gateway):
    up = upstream(num_tokens=6, name="a")
    gw = gateway(fast_config(one_pool([up.url])))
    raw = client_for(gw).chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    assert raw.headers["x-upstream-name"] == "a"
    assert len(raw.headers["x-request-id"]) == 32 and raw.headers["x-model-version"] == "default"
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(
        f"tok{i} " for i in range(6))
    assert chunks[-1].usage.completion_tokens == 6
    assert "authorization" not in httpx.get(up.url + "/admin/last_request").json()["headers"]


def test_chunks_are_passed_through_as_they_come_not_buffered(upstream, gateway):
    up = upstream(num_tokens=5, tokens_per_second=10)  # one token every 100 ms
    gw = gateway(fast_config(one_pool([up.url])))
    arrivals = []
    start = time.perf_counter()
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=chat(stream=True), timeout=10) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content"' in line:
                arrivals.append(time.perf_counter() - start)
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] > 0.3  # spread out as generated
    assert arrivals[0] < 0.3


def test_non_streaming_and_completions_routes(upstream, gateway):
    up = upstream(num_tokens=3)
    gw = gateway(fast_config(one_pool([up.url])))
    client = client_for(gw)
    answer = client.completions.create(model="fake", prompt="hello")
    assert answer.choices[0].text == "tok0 tok1 tok2 " and answer.usage.total_tokens > 3
    reply = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content == "tok0 tok1 tok2 "


def test_headers_are_kept_and_forwarded(upstream, gateway):
    up = upstream()
    gw = gateway(fast_config(one_pool([up.url])))
    response = httpx.post(gw.url + "/v1/chat/completions", json=chat(),
                          headers={"x-request-id": "req-123", "traceparent": "00-aa-bb-01", "x-priority": "low",
                                   "authorization": "Bearer client-secret"})
    assert response.headers["x-request-id"] == "req-123"
    last = httpx.get(up.url + "/admin/last_request").json()
    assert last["headers"] == {"x-request-id": "req-123", "traceparent": "00-aa-bb-01", "x-priority": "1"}
    assert last["priority"] == 1


def test_models_lists_every_model_and_version(upstream, gateway):
    up = upstream()
    models = {"chat": {"versions": {"v1": {"pool": {"endpoints": [up.url]}}, "v2": {"pool": {"endpoints": [up.url]}}}},
              "other": {"pool": {"endpoints": [up.url]}}}
    gw = gateway(fast_config(models))
    ids = [m.id for m in client_for(gw).models.list().data]
    assert ids == ["chat", "chat@v1", "chat@v2", "other", "other@default"]


def test_errors_are_openai_shaped(upstream, gateway):
    up = upstream()
    gw = gateway(fast_config(one_pool([up.url])))
    with pytest.raises(openai.NotFoundError) as err:
        client_for(gw).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"
    bad = httpx.post(gw.url + "/v1/chat/completions", content=b"{oops")
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(gw.url + "/v1/embeddings").status_code == 404
    assert set(httpx.get(gw.url + "/v2/x").json()["error"]) == {"message", "type", "param", "code"}


def test_versions_by_header_by_name_and_upstream_model_rename(upstream, gateway):
    v1, v2 = upstream(name="one"), upstream(name="two")
    models = {"chat": {"versions": {"v1": {"weight": 1, "pool": {"endpoints": [v1.url]}},
                                    "v2": {"weight": 0, "upstream_model": "chat-ft", "pool": {"endpoints": [v2.url]}}}}}
    gw = gateway(fast_config(models))
    url = gw.url + "/v1/chat/completions"
    assert httpx.post(url, json=chat("chat")).headers["x-upstream-name"] == "one"
    pinned = httpx.post(url, json=chat("chat"), headers={"x-model-version": "v2"})
    assert pinned.headers["x-upstream-name"] == "two" and pinned.headers["x-model-version"] == "v2"
    assert httpx.post(url, json=chat("chat@v2")).headers["x-upstream-name"] == "two"
    assert httpx.get(v2.url + "/admin/last_request").json()["model"] == "chat-ft"
    assert httpx.post(url, json=chat("chat@v7")).status_code == 404


def test_long_prompts_go_to_the_long_pool(upstream, gateway):
    short, long = upstream(name="short"), upstream(name="long")
    models = {"fake": {"pool": {"endpoints": [short.url]},
                       "long_prompt": {"threshold_tokens": 100, "pool": {"endpoints": [long.url]}}}}
    gw = gateway(fast_config(models))
    url = gw.url + "/v1/chat/completions"
    assert httpx.post(url, json=chat(content="x" * 100)).headers["x-upstream-name"] == "short"
    assert httpx.post(url, json=chat(content="x" * 800)).headers["x-upstream-name"] == "long"


def test_session_affinity_keeps_a_user_on_one_replica(upstream, gateway):
    ups = [upstream(name=n) for n in "abc"]
    gw = gateway(fast_config(one_pool([u.url for u in ups], "session_affinity")))
    url = gw.url + "/v1/chat/completions"
    homes = {}
    for user in range(12):
        seen = {httpx.post(url, json=chat(user=f"u{user}")).headers["x-upstream-name"] for _ in range(3)}
        assert len(seen) == 1
        homes[user] = seen.pop()
    assert len(set(homes.values())) > 1


def test_health_ready_and_metrics(upstream, gateway):
    up = upstream()
    gw = gateway(fast_config(one_pool([up.url])))
    assert httpx.get(gw.url + "/health").status_code == 200
    wait_until(lambda: httpx.get(gw.url + "/ready").status_code == 200, 5, "not ready")
    httpx.post(gw.url + "/v1/chat/completions", json=chat(stream=True))
    text = httpx.get(gw.url + "/metrics").text
    requests = Metrics(text).value("kvserve:gateway_requests_total", endpoint=up.url, model="fake", status="200",
                                   version="default")
    assert requests == 1
    assert "kvserve:gateway_time_to_first_token_seconds_count" in text
    httpx.post(gw.url + "/admin/endpoints/drain", json={"url": up.url}, headers={"x-admin-key": ADMIN_KEY})
    assert httpx.get(gw.url + "/ready").status_code == 503


def test_low_priority_is_shed_when_every_endpoint_queues_and_high_priority_is_not(upstream, gateway):
    up = upstream(num_tokens=10, tokens_per_second=20, max_running=1)  # 0.5 s per answer, one at a time
    config = fast_config(one_pool([up.url]), shedding={"queue_threshold": 2, "retry_after_s": 3},
                         timeouts={"first_byte_s": 30, "idle_s": 30})
    gw = gateway(config)
    url = gw.url + "/v1/chat/completions"
    threads = [threading.Thread(target=httpx.post, args=(url,), kwargs={"json": chat(), "timeout": 30})
               for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: up.app.counters.waiting >= 3, 5, "the upstream never queued")
    time.sleep(0.2)  # a scrape sees the queue
    shed = httpx.post(url, json=chat(), headers={"x-priority": "low"})
    assert shed.status_code == 429 and shed.headers["retry-after"] == "3"
    assert shed.json()["error"]["code"] == "overloaded"
    kept = httpx.post(url, json=chat(max_tokens=1), headers={"x-priority": "high"}, timeout=30)
    assert kept.status_code == 200, kept.text
    for t in threads:
        t.join()
    assert scrape(gw.url).value("kvserve:gateway_shed_requests_total", model="fake", version="default") == 1


def test_a_client_that_leaves_mid_stream_cancels_the_upstream_request(upstream, gateway):
    up = upstream(num_tokens=200, tokens_per_second=20)  # 10 s if nobody stops it
    gw = gateway(fast_config(one_pool([up.url])))
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=chat(stream=True), timeout=10) as response:
        next(response.iter_lines())
        assert up.app.counters.running == 1
    wait_until(lambda: up.app.counters.running == 0, 3, "the upstream kept generating for a gone client")
    wait_until(lambda: gw.state.table.endpoints()[0].in_flight == 0, 3, "in-flight count leaked")


def test_prefix_aware_beats_round_robin_on_ttft_with_simulated_prefix_caches(upstream, gateway):
    """A stand-in for the real-replica check: fakes whose TTFT grows with uncached prompt characters."""
    tenants = [f"Tenant {t} system prompt: " + "you are a careful assistant. " * 60 for t in range(4)]
    rng = random.Random(7)
    order = [rng.randrange(4) for _ in range(60)]

    def p90_ttft(policy: str) -> float:
        ups = [upstream(prefill_chars_per_second=20_000, num_tokens=2) for _ in range(3)]
        gw = gateway(fast_config(one_pool([u.url for u in ups], policy, options={"prefix_chunk_chars": 128})))
        ttfts = []
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            for i, tenant in enumerate(order):
                start = time.perf_counter()
                with client.stream("POST", "/v1/chat/completions",
                                   json=chat(stream=True, content=tenants[tenant] + f"question {i}")) as r:
                    next(r.iter_lines())
                ttfts.append(time.perf_counter() - start)
        ttfts.sort()
        return ttfts[int(0.9 * len(ttfts))]

    assert p90_ttft("round_robin") > 2 * p90_ttft("prefix_aware")


def test_weights_split_traffic_between_versions(upstream, gateway):
    v1, v2 = upstream(name="v1"), upstream(name="v2")
    models = {"chat": {"sticky": False, "versions": {"v1": {"weight": 80, "pool": {"endpoints": [v1.url]}},
                                                     "v2": {"weight": 20, "pool": {"endpoints": [v2.url]}}}}}
    gw = gateway(fast_config(models))
    with httpx.Client(base_url=gw.url) as client:
        counts = Counter(client.post("/v1/chat/completions", json=chat("chat")).headers["x-model-version"]
                         for _ in range(300))
    assert 0.10 < counts["v2"] / 300 < 0.30, counts  # 20% ± 4.3 standard deviations of 300 draws


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_answers_name_the_model_the_client_asked_for(upstream, gateway, stream, path):
    up = upstream(num_tokens=5)
    gw = gateway(fast_config({"chat": {"upstream_model": "tiny", "pool": {"endpoints": [up.url]}}}))
    body = chat("chat", stream=stream) if path.endswith("chat/completions") else {
        "model": "chat", "prompt": "hi", "stream": stream}
    response = httpx.post(gw.url + path, json=body, timeout=10)
    assert httpx.get(up.url + "/admin/last_request").json()["model"] == "tiny"
    assert response.status_code == 200 and "tiny" not in response.text
    if not stream:
        assert response.json()["model"] == "chat"
        return
    chunks = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    assert len(chunks) >= 5 and {c["model"] for c in chunks} == {"chat"}


def test_a_wrong_method_is_a_405_with_allow_and_an_unknown_path_a_404(upstream, gateway):
    up = upstream()
    gw = gateway(fast_config(one_pool([up.url])))
    wrong = httpx.get(gw.url + "/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert httpx.post(gw.url + "/health").headers["allow"] == "GET"
    missing = httpx.post(gw.url + "/v1/nothing", json={})
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
