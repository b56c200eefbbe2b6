"""The exact response cache end to end, and its key and entry rules."""

from __future__ import annotations

import json

import httpx
import pytest

from kvserve.gateway.store.cache import Entry, StreamAssembler, cache_key, deterministic, entry_from_json
from tests.helpers import wait_until

from ..conftest import bearer, chat, fast_config, make_key, one_pool


@pytest.fixture
def cached_gateway(upstream, gateway, tmp_path):
    up = upstream(num_tokens=3)
    keys = tmp_path / "keys.yaml"
    tenants = {"a": make_key(keys, tenant="a"), "a2": make_key(keys, tenant="a"), "b": make_key(keys, tenant="b")}
    gw = gateway(fast_config(one_pool([up.url]), auth={"enabled": True, "keys_file": str(keys)},
                             cache={"enabled": True, "ttl_s": 60}))
    return gw, tenants


def ask(gw, key, headers=None, **body):
    return httpx.post(gw.url + "/v1/chat/completions", json=chat(**body), headers={**bearer(key), **(headers or {})})


def test_deterministic_answers_are_cached_per_tenant(cached_gateway):
    gw, keys = cached_gateway
    first = ask(gw, keys["a"], temperature=0)
    again = ask(gw, keys["a2"], temperature=0)  # another key of the same tenant
    assert again.headers["x-cache"] == "hit" and again.json()["id"] == first.json()["id"]
    assert again.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    other_tenant = ask(gw, keys["b"], temperature=0)
    assert "x-cache" not in other_tenant.headers and other_tenant.json()["id"] != first.json()["id"]


def test_an_idempotency_key_answered_from_the_cache_keeps_that_answer(cached_gateway):
    gw, keys = cached_gateway
    ask(gw, keys["a"], temperature=0, content="fill the cache")
    with_key = {"idempotency-key": "pay-1"}
    hit = ask(gw, keys["a"], with_key, temperature=0, content="fill the cache")
    assert hit.headers["x-cache"] == "hit"
    wait_until(lambda: ask(gw, keys["a"], with_key, temperature=0, content="fill the cache")
               .headers.get("idempotent-replayed") == "true", 5, "the cached answer was not kept for the key")
    assert ask(gw, keys["a"], with_key, temperature=0, content="fill the cache").json()["id"] == hit.json()["id"]


def test_a_cached_answer_is_replayed_as_sse_to_a_streaming_request(cached_gateway):
    gw, keys = cached_gateway
    first = ask(gw, keys["a"], seed=7, content="stream me")
    streamed = ask(gw, keys["a"], seed=7, content="stream me", stream=True)
    assert streamed.headers["x-cache"] == "hit" and streamed.headers["content-type"] == "text/event-stream"
    data = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert first.json()["choices"][0]["message"]["content"] in data[0]


def test_a_streamed_answer_is_stored_and_replayed_with_its_text(cached_gateway):
    gw, keys = cached_gateway
    streamed = ask(gw, keys["a"], seed=3, content="store my stream", stream=True,
                   stream_options={"include_usage": True})
    chunks = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    wait_until(lambda: "x-cache" in ask(gw, keys["a"], seed=3, content="store my stream").headers, 5,
               "the streamed answer was not stored")
    hit = ask(gw, keys["a"], seed=3, content="store my stream").json()
    assert text and hit["choices"][0]["message"]["content"] == text and hit["id"] == chunks[0]["id"]
    assert hit["usage"] == chunks[-1]["usage"] and hit["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("headers,body", [
    ({"cache-control": "no-store"}, {"temperature": 0}),
    ({"x-sensitive": "true"}, {"temperature": 0}),
    ({}, {"temperature": 0.7}),
    ({}, {"temperature": 0, "content": "mail me at jane.doe@example.com"}),
    ({}, {"temperature": 0, "content": "card 4111 1111 1111 1111"}),
])
def test_not_cached(cached_gateway, headers, body):
    gw, keys = cached_gateway
    first, second = (ask(gw, keys["a"], headers, **body) for _ in range(2))
    assert "x-cache" not in second.headers and first.json()["id"] != second.json()["id"]


def test_key_ignores_stream_and_user_but_not_sampling():
    base = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0}
    key = cache_key("t", "m", "v1", "/v1/chat/completions", base)
    assert key == cache_key("t", "m", "v1", "/v1/chat/completions", {**base, "stream": True, "user": "u"})
    assert key != cache_key("t", "m", "v1", "/v1/chat/completions", {**base, "max_tokens": 5})
    assert key != cache_key("t2", "m", "v1", "/v1/chat/completions", base)
    assert key != cache_key("t", "m", "v2", "/v1/chat/completions", base)
    assert deterministic({"seed": 3}) and not deterministic({"seed": 3, "n": 2}) and not deterministic({})


def test_entries_round_trip_from_json_and_from_a_stream():
    body = b'{"id":"c1","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},' \
           b'"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}'
    entry = entry_from_json(body, chat=True)
    assert entry is not None and entry.content == "hi" and Entry.loads(entry.dumps()) == entry
    assembler = StreamAssembler(chat=True)
    for chunk in ({"id": "c1", "choices": [{"index": 0, "delta": {"content": "h"}}]},
                  {"id": "c1", "choices": [{"index": 0, "delta": {"content": "i"}, "finish_reason": "stop"}]}):
        assembler.feed(chunk)
    assert assembler.entry().content == "hi"
    tools = b'{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{}]}}]}'
    assert entry_from_json(tools, chat=True) is None


def test_a_hit_names_the_model_its_request_asked_for(cached_gateway):
    gw, keys = cached_gateway
    ask(gw, keys["a"], temperature=0, content="which model?")
    pinned = ask(gw, keys["a"], temperature=0, content="which model?", model="fake@default")
    assert pinned.headers["x-cache"] == "hit" and pinned.json()["model"] == "fake@default"
