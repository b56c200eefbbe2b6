"""Body validation and its OpenAI-shaped errors, without a server."""

from __future__ import annotations

import pytest

from kvserve.openai_error import OpenAIError
from kvserve.server.errors import parse_body
from kvserve.server.protocol import ChatCompletionRequest, CompletionRequest
from kvserve.server.sampling import check_context, to_sampling_params


def _error(model, raw: str) -> OpenAIError:
    with pytest.raises(OpenAIError) as info:
        parse_body(model, raw.encode())
    assert info.value.status == 400
    return info.value


def test_messages_accept_text_parts_and_join_them():
    body = parse_body(ChatCompletionRequest, b'{"messages": [{"role": "user", "content": '
                                             b'[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}')
    assert body.messages[0].text() == "ab"


def test_nested_errors_name_the_path():
    error = _error(ChatCompletionRequest, '{"messages": [{"role": "user", "content": "x"}, {"role": "user", "x": 1}]}')
    assert error.param == "messages[1].x"
    assert error.message == "Unrecognized request argument supplied: messages[1].x"


def test_missing_required_field():
    error = _error(CompletionRequest, '{"model": "m"}')
    assert (error.param, error.code) == ("prompt", "missing_required_parameter")


def test_nan_and_infinity_are_refused():
    assert _error(ChatCompletionRequest, '{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}').param \
        == "temperature"


def test_prompt_forms_become_a_batch():
    assert parse_body(CompletionRequest, b'{"prompt": "a"}').prompts() == ["a"]
    assert parse_body(CompletionRequest, b'{"prompt": [1, 2]}').prompts() == [[1, 2]]
    assert parse_body(CompletionRequest, b'{"prompt": ["a", "b"]}').prompts() == ["a", "b"]
    assert parse_body(CompletionRequest, b'{"prompt": [[1], [2, 3]]}').prompts() == [[1], [2, 3]]
    assert _error(CompletionRequest, '{"prompt": []}').param == "prompt"


def test_sampling_params_mapping():
    body = parse_body(ChatCompletionRequest, b'{"messages": [{"role": "user", "content": "x"}], "top_p": 0, '
                                             b'"stop": "END", "seed": 3, "temperature": 0.5, "min_p": 0.1}')
    params = to_sampling_params(body, body.output_limit(), body.num_logprobs())
    assert (params.top_p, params.top_k) == (1.0, 1)  # top_p 0 keeps only the best token
    assert params.stop == ["END"] and params.seed == 3 and params.temperature == 0.5 and params.min_p == 0.1
    assert params.max_tokens is None and params.logprobs is None


def test_context_check_says_the_numbers():
    check_context(10, 20, 30, "messages")
    with pytest.raises(OpenAIError) as info:
        check_context(10, 21, 30, "messages")
    assert "maximum context length is 30 tokens" in info.value.message
    assert "you requested 31 tokens (10 in the messages, 21 in the completion)" in info.value.message
    with pytest.raises(OpenAIError):
        check_context(30, None, 30, "prompt")  # no room for a single token


TRICKY_TEXTS = ["", "plain", 'quo"te \\ back', "line\nbreak\ttab\r\x00\x1f\x7f", "Größe 東京 🙂", "\u2028\u2029</script>"]


def test_stream_chunks_without_models_are_byte_for_byte_the_models():
    from kvserve.server import sse
    from kvserve.server.responses import (
        ChatChunkChoice, ChatCompletionChunk, Completion, CompletionChoice, DeltaMessage,
    )

    for text in TRICKY_TEXTS:
        for finish, stop in ((None, None), ("stop", "END"), ("stop", 7), ("length", None)):
            completion = sse.ChunkEncoder("text_completion", "cmpl-1", 1700000000, "m/ü\"",
                                          ',"usage":null,"system_fingerprint":' + sse.dumps("m:v1"))
            expected = Completion(id="cmpl-1", created=1700000000, model="m/ü\"", choices=[
                CompletionChoice(index=3, text=text, finish_reason=finish, stop_reason=stop)], system_fingerprint="m:v1")
            assert completion.event({"index": 3, "text": text, "logprobs": None, "finish_reason": finish,
                                     "stop_reason": stop}) == sse.event(expected.model_dump_json())
            chat = sse.ChunkEncoder("chat.completion.chunk", "chatcmpl-1", 1700000000, "m",
                                    ',"usage":null,"system_fingerprint":' + sse.dumps("m:v2"))
            expected = ChatCompletionChunk(id="chatcmpl-1", created=1700000000, model="m", choices=[
                ChatChunkChoice(index=0, delta=DeltaMessage(content=text or None), finish_reason=finish,
                                stop_reason=stop)], system_fingerprint="m:v2")
            assert chat.event({"index": 0, "delta": {"content": text or None}, "logprobs": None,
                               "finish_reason": finish, "stop_reason": stop}) == sse.event(expected.model_dump_json())
