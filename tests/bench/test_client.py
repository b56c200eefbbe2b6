"""One streaming request against real loopback servers: timings, usage, error types, hosts."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from kvserve.bench.client import Target, check_host, new_client, request_body, stream_request
from kvserve.bench.datasets import SampleRequest
from kvserve.bench.record import RequestRecord
from tests.helpers import free_port

SAMPLE = SampleRequest("the quick brown fox jumps over the lazy dog", 9, 8)


def send(target: Target, sample: SampleRequest = SAMPLE) -> RequestRecord:
    async def go() -> RequestRecord:
        async with new_client(4) as client:
            record = RequestRecord(0, time.perf_counter())
            await stream_request(client, target, sample, record)
            return record

    return asyncio.run(go())


def test_completion_stream_is_timed_per_chunk_with_usage(steady_upstream):
    record = send(Target(steady_upstream, "m"))
    assert record.error is None, record.error_message
    assert (record.completion_tokens, record.prompt_tokens) == (8, len(SAMPLE.prompt) // 4)
    assert len(record.chunk_times) == 8
    assert record.chunk_times[0] - record.start >= 0.02  # the upstream's time to first token
    assert record.chunk_times == sorted(record.chunk_times) and record.end >= record.chunk_times[-1]
    assert record.chunk_times[-1] - record.chunk_times[0] >= 7 / 200 * 0.9  # 200 tokens/s


def test_chat_stream_with_system_prompt_and_api_key(steady_upstream):
    sample = SampleRequest("a question", 12, 3, system="you are a shared system prompt")
    record = send(Target(steady_upstream, "m", "/v1/chat/completions", api_key="sk-test"), sample)
    assert record.error is None and record.completion_tokens == 3 and len(record.chunk_times) == 3
    seen = httpx.get(steady_upstream + "/admin/last_request").json()
    assert seen["path"] == "/v1/chat/completions" and seen["headers"]["authorization"] == "Bearer sk-test"


def test_error_status_is_recorded_by_status_and_openai_type(fake_upstream):
    url = fake_upstream("--fail-rate", "1", "--status-code", "429")
    record = send(Target(url, "m"))
    assert (record.error, record.error_message) == ("http_429:invalid_request_error", "injected failure")
    assert record.chunk_times == [] and record.end is not None


def test_refused_connection_is_a_connect_error():
    record = send(Target(f"http://127.0.0.1:{free_port()}", "m"))
    assert record.error == "connect_error"


def test_a_hung_server_times_out_within_the_limit(fake_upstream):
    url = fake_upstream("--hang")
    record = send(Target(url, "m", timeout_s=0.5))
    assert record.error == "timeout"
    assert 0.45 <= record.end - record.start < 2.0


async def _canned_server(body: bytes) -> tuple[asyncio.AbstractServer, str]:
    """A loopback socket that answers any request with an SSE response carrying `body`, then closes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def send_to_canned(body: bytes) -> RequestRecord:
    async def go() -> RequestRecord:
        server, url = await _canned_server(body)
        async with server, new_client(1) as client:
            record = RequestRecord(0, time.perf_counter())
            await stream_request(client, Target(url, "m"), SAMPLE, record)
            return record

    return asyncio.run(go())


def _data(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def test_stream_cut_before_done_is_incomplete():
    record = send_to_canned(_data({"choices": [{"text": "a"}]}))
    assert record.error == "incomplete_stream" and len(record.chunk_times) == 1


def test_error_event_inside_the_stream_is_typed():
    record = send_to_canned(_data({"choices": [{"text": "a"}]}) + _data({"error": {"type": "overloaded", "message": "busy"}}))
    assert (record.error, record.error_message) == ("stream:overloaded", "busy")


def test_role_only_and_usage_chunks_are_not_output():
    body = (
        _data({"choices": [{"delta": {"role": "assistant", "content": ""}}]})
        + _data({"choices": [{"delta": {"content": "hi"}}]})
        + _data({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 1}})
        + b"data: [DONE]\n\n"
    )
    record = send_to_canned(body)
    assert record.error is None and len(record.chunk_times) == 1 and record.completion_tokens == 1


def test_request_body_asks_for_usage_and_shapes_both_endpoints():
    sample = SampleRequest("question", 3, 5, system="sys")
    body = request_body(Target("http://127.0.0.1:1", "m"), sample)
    assert body["prompt"] == "sys\n\nquestion" and body["max_tokens"] == 5 and "ignore_eos" not in body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    chat = request_body(Target("http://127.0.0.1:1", "m", "/v1/chat/completions", ignore_eos=True), sample)
    assert chat["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "question"}]
    assert chat["ignore_eos"] is True and "prompt" not in chat


def test_a_sample_with_token_ids_sends_them_as_the_prompt():
    sample = SampleRequest("", 3, 4, prompt_token_ids=(7, 0, 42))
    body = request_body(Target("http://127.0.0.1:1", "m", ignore_eos=True), sample)
    assert body["prompt"] == [7, 0, 42] and body["max_tokens"] == 4 and body["ignore_eos"] is True


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://127.9.9.9", "http://[::1]:80", "https://localhost/"])
def test_loopback_hosts_are_allowed(url):
    check_host(url)


@pytest.mark.parametrize("url", ["http://10.0.0.1:8000", "http://example.com", "http://0.0.0.0:80", "ftp://127.0.0.1"])
def test_other_hosts_are_refused(url):
    with pytest.raises(ValueError):
        check_host(url)


def test_a_host_allowed_by_name_passes_and_base_url_is_normalised():
    check_host("http://gpu-box:8000", ("gpu-box",))
    assert Target("http://127.0.0.1:8000/v1/", "m").base_url == "http://127.0.0.1:8000"
    with pytest.raises(ValueError, match="allow-host"):
        Target("http://gpu-box:8000", "m")
