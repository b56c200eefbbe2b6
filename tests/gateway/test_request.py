"""Parsing incoming requests."""

from __future__ import annotations

import json

import httpx
import pytest

from kvserve.gateway.config import parse_config
from kvserve.gateway.request import RequestParser, prompt_text
from kvserve.gateway.routing.policies import PolicyOptions
from kvserve.gateway.routing.pool import Pool
from kvserve.gateway.routing.versions import VersionRoute
from kvserve.openai_error import OpenAIError

from .conftest import fast_config, make_key, one_pool

CONFIG = parse_config({"models": {"m": {"pool": {"endpoints": []}}}})


def parse(body: dict | bytes, **headers: str):
    """Parse a chat request (a dict gets one user message unless it names its own)."""
    raw = body if isinstance(body, bytes) else json.dumps({"messages": [{"role": "user", "content": "x"}], **body}).encode()
    pairs = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return RequestParser(CONFIG).parse("/v1/chat/completions", pairs, raw)


def version(upstream_model: str = "m") -> VersionRoute:
    return VersionRoute("m", "v", 1, upstream_model, Pool.build([], "round_robin", PolicyOptions()))


def test_request_id_is_kept_or_generated_and_trace_headers_are_collected():
    kept = parse({"model": "m"}, x_request_id="abc", traceparent="00-1-2-01", tracestate="k=v")
    assert kept.request_id == "abc"
    assert kept.trace == [("traceparent", "00-1-2-01"), ("tracestate", "k=v")]
    a, b = parse({"model": "m"}), parse({"model": "m"})
    assert a.request_id != b.request_id and len(a.request_id) == 32


def test_version_from_the_model_name_or_the_header_and_a_conflict_is_a_400():
    assert parse({"model": "m@v2"}).pinned_version == "v2"
    assert parse({"model": "m"}, x_model_version="v3").pinned_version == "v3"
    assert parse({"model": "m@v3"}, x_model_version="v3").model == "m"
    with pytest.raises(OpenAIError) as err:
        parse({"model": "m@v2"}, x_model_version="v3")
    assert err.value.status == 400


def test_priority_from_an_integer_or_a_level_name():
    assert parse({"model": "m"}).priority == 0
    assert parse({"model": "m"}, x_priority="low").priority == 1
    assert parse({"model": "m"}, x_priority="-5").priority == -5
    with pytest.raises(OpenAIError, match="x-priority"):
        parse({"model": "m"}, x_priority="urgent!")


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"messages": []}', b'{"model": 3}'])
def test_malformed_bodies_are_400s(body):
    with pytest.raises(OpenAIError) as err:
        parse(body)
    assert err.value.status == 400


def test_session_key_from_the_header_else_the_user_field():
    assert parse({"model": "m", "user": "u1"}).route.session_key == "u1"
    assert parse({"model": "m", "user": "u1"}, x_session_id="s9").route.session_key == "s9"
    assert parse({"model": "m"}).route.session_key is None


def test_prompt_text_covers_roles_parts_and_completions():
    chat = {"messages": [{"role": "system", "content": "S"},
                         {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]}
    assert prompt_text(chat) == "system:S\nuser:a\n"
    assert prompt_text({"prompt": "plain"}) == "plain"
    assert prompt_text({"prompt": [1, 2, 3]}) == "[1, 2, 3]"
    request = parse({"model": "m", "messages": [{"role": "user", "content": "x" * 400}]})
    assert request.route.est_prompt_tokens == len("user:" + "x" * 400 + "\n") // 4


def test_the_body_is_forwarded_untouched_unless_model_or_priority_change():
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}'
    request = parse(raw)
    assert request.upstream_body(version(), forward_priority=True) is raw
    renamed = json.loads(parse(raw.replace(b'"m"', b'"m@v"')).upstream_body(version("Qwen3-8B"), True))
    assert renamed["model"] == "Qwen3-8B"
    prioritized = parse(raw, x_priority="high")
    assert json.loads(prioritized.upstream_body(version(), True))["priority"] == -1
    assert prioritized.upstream_body(version(), False) == raw


DEEP = b"[" * 2000 + b"]" * 2000


@pytest.mark.parametrize("body", [
    {"model": "fake", "stream": True, "stream_options": "AAA", "messages": []},
    {"model": "fake", "stream": True, "stream_options": [1], "messages": []},
    {"model": "fake", "stream": True, "stream_options": 5, "messages": []},
    {"model": "fake", "stream": True, "stream_options": True, "messages": []},
    {"model": "fake", "stream": True, "stream_options": {"include_usage": "yes"}, "messages": []},
    {"model": "fake", "stream": "yes", "messages": []},
    {"model": "fake", "max_tokens": "ten", "max_completion_tokens": None, "messages": []},
    b'{"model": "fake", "messages": ' + DEEP + b"}",
    DEEP,
])
@pytest.mark.parametrize("with_keys", [False, True])
def test_wrongly_typed_fields_and_deep_nesting_are_400s_end_to_end(upstream, gateway, tmp_path, body, with_keys):
    up = upstream()
    sections = {}
    if with_keys:
        keys = tmp_path / "keys.yaml"
        make_key(keys)
        sections["auth"] = {"enabled": True, "keys_file": str(keys)}
    gw = gateway(fast_config(one_pool([up.url]), **sections))
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(gw.url + "/v1/chat/completions", content=raw)  # no key: parsing comes first
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
