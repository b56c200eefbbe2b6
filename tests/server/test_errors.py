"""Bad input gets an OpenAI-shaped 4xx, never a 500 or a traceback (raw HTTP)."""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import MODEL_NAME

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "Hello"}]


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in response.text
    return body["error"]


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        yield client


def test_malformed_json_is_400(http):
    error = error_of(http.post(CHAT, content=b'{"model": "x", "messages": [', headers={"content-type": "application/json"}), 400)
    assert error["code"] == "invalid_json"
    error_of(http.post(CHAT, content=b"[1, 2]"), 400)
    error_of(http.post(CHAT, content=b""), 400)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", "10"),
        ("temperature", "hot"),
        ("stream", "yes"),
        ("n", 1.5),
        ("messages", "Hello"),
        ("stop", 7),
        ("seed", True),
    ],
)
def test_wrong_types_are_400_naming_the_field(http, field, value):
    body = {"model": MODEL_NAME, "messages": USER, field: value}
    error = error_of(http.post(CHAT, json=body), 400)
    assert error["param"].startswith(field)
    assert error["type"] == "invalid_request_error"


def test_unknown_field_is_400(http):
    error = error_of(http.post(CHAT, json={"model": MODEL_NAME, "messages": USER, "temprature": 0.5}), 400)
    assert error["message"] == "Unrecognized request argument supplied: temprature"
    assert error["param"] == "temprature"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 1000),
        ("n", 0),
        ("temperature", 5.0),
        ("temperature", -1.0),
        ("top_p", 1.5),
        ("max_tokens", -1),
        ("max_tokens", 0),
        ("presence_penalty", 3.0),
        ("frequency_penalty", -2.5),
        ("top_logprobs", 50),
        ("seed", 2**70),
        ("top_k", -5),
        ("repetition_penalty", 0.0),
        ("request_timeout", -1.0),
    ],
)
def test_out_of_range_values_are_400(http, field, value):
    body = {"model": MODEL_NAME, "messages": USER, field: value}
    if field == "top_logprobs":
        body["logprobs"] = True
    error = error_of(http.post(CHAT, json=body), 400)
    assert error["param"] == field


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"min_tokens": 9, "max_tokens": 3}, "min_tokens"),
        ({"logit_bias": {"1": 5.0}}, "logit_bias"),
        ({"tools": [{"type": "function", "function": {"name": "not a name!"}}]}, "tools[0].function.name"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         "messages[0].content[0].type"),
    ],
)
def test_inconsistent_requests_are_400(http, extra, param):
    error = error_of(http.post(CHAT, json={"model": MODEL_NAME, "messages": USER, **extra}), 400)
    assert error["param"] == param


def test_context_overflow_is_400_with_the_numbers(http):
    prompt_tokens = http.post("/tokenize", json={"messages": USER}).json()["count"]
    error = error_of(http.post(CHAT, json={"model": MODEL_NAME, "messages": USER, "max_tokens": 1000}), 400)
    assert error["code"] == "context_length_exceeded"
    assert "maximum context length is 256 tokens" in error["message"]
    assert f"you requested {prompt_tokens + 1000} tokens ({prompt_tokens} in the messages, 1000 in the completion)" \
        in error["message"]
    long_prompt = " ".join(["Paris"] * 400)
    error = error_of(http.post(COMPLETIONS, json={"model": MODEL_NAME, "prompt": long_prompt}), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"


def test_absurd_max_tokens_is_400_not_a_crash(http):
    error = error_of(http.post(COMPLETIONS, json={"model": MODEL_NAME, "prompt": "Hi", "max_tokens": 10**15}), 400)
    assert error["code"] == "context_length_exceeded"


@pytest.mark.parametrize("bad", [10**6, -2, 2**63, 2**64 + 5, -(2**63) - 1])
def test_token_ids_outside_the_vocabulary_are_400_with_a_code(http, bad):
    for prompt in ([1, 2, bad], [[1], [bad, 3]]):
        error = error_of(http.post(COMPLETIONS, json={"model": MODEL_NAME, "prompt": prompt}), 400)
        assert f"token id {bad} is outside the vocabulary" in error["message"]
        assert (error["param"], error["code"]) == ("prompt", "invalid_value")
    error = error_of(http.post("/detokenize", json={"tokens": [1, bad]}), 400)
    assert f"token id {bad} is outside the vocabulary" in error["message"]
    assert (error["param"], error["code"]) == ("tokens", "invalid_value")


def test_detokenize_accepts_the_whole_vocabulary_and_nothing_past_it(http):
    vocab = http.post(COMPLETIONS, json={"prompt": [10**9]}).json()["error"]["message"]
    last = int(vocab.rsplit("..", 1)[1].rstrip(")"))
    assert http.post("/detokenize", json={"tokens": [0, last]}).status_code == 200
    error_of(http.post("/detokenize", json={"tokens": [last + 1]}), 400)


@pytest.mark.parametrize("extra", [{}, {"max_tokens": None}])
def test_completions_default_to_16_tokens(http, extra):
    reply = http.post(COMPLETIONS, json={"prompt": "Hello", "ignore_eos": True, **extra})
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] == 16


def test_unknown_model_is_404(http):
    error = error_of(http.post(CHAT, json={"model": "gpt-17", "messages": USER}), 404)
    assert error["code"] == "model_not_found" and "gpt-17" in error["message"]
    error_of(http.get("/v1/models/gpt-17"), 404)


def test_unknown_route_and_wrong_method_are_shaped(http):
    assert error_of(http.get("/v1/nothing"), 404)["code"] == "not_found"
    assert error_of(http.get(CHAT), 405)["code"] == "method_not_allowed"


def test_missing_model_means_the_served_model(http):
    reply = http.post(CHAT, json={"messages": USER, "max_tokens": 2})
    assert reply.status_code == 200 and reply.json()["model"] == MODEL_NAME


def test_oversized_body_is_413_not_memory_pressure(http):
    from kvserve.server.body import MAX_BODY_BYTES

    body = b'{"prompt": "' + b"a" * (MAX_BODY_BYTES + 1) + b'"}'
    assert error_of(http.post(COMPLETIONS, content=body), 413)["code"] == "request_too_large"
