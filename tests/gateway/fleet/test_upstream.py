"""The upstream HTTP client against a real fake upstream on loopback."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from kvserve.bench.fake_upstream import FakeUpstreamConfig, FakeUpstreamServer
from kvserve.gateway.fleet.upstream import Origin, UpstreamClient, UpstreamClosed, UpstreamReadTimeout, encode_request
from tests.helpers import wait_until

from ..conftest import chat

BODY = json.dumps(chat(stream=True)).encode()
HEADERS = {"content-type": "application/json"}


def run(coro):
    return asyncio.run(coro)


async def stream(client: UpstreamClient, origin: Origin, timeout: float = 5.0) -> tuple[int, list[bytes], float]:
    start = time.perf_counter()
    response = await client.request(origin, "POST", "/v1/chat/completions", HEADERS, BODY, timeout)
    chunks = []
    while chunk := await response.read():
        chunks.append(chunk)
    response.release()
    return response.status, chunks, time.perf_counter() - start


def test_streams_chunks_as_they_arrive_and_reuses_the_connection(upstream):
    server = upstream(num_tokens=5, tokens_per_second=20)  # a token every 50 ms
    origin = Origin.parse(server.url)

    async def main():
        client = UpstreamClient()
        status, chunks, _ = await stream(client, origin)
        assert status == 200
        assert len(chunks) >= 5  # arrived separately, not buffered whole
        assert b"".join(chunks).endswith(b"data: [DONE]\n\n")
        parked = client.idle[origin][0][1]
        await stream(client, origin)
        assert client.idle[origin][0][1] is parked  # the same keep-alive connection
        await client.close()

    run(main())


def test_a_connection_the_server_closed_is_replaced_transparently():
    first = FakeUpstreamServer(FakeUpstreamConfig(tokens_per_second=0)).start()
    origin = Origin.parse(first.url)
    servers = [first]

    async def main():
        client = UpstreamClient(keepalive_s=60)
        await stream(client, origin)
        parked = client.idle[origin][0][1]
        # stop the server while this loop is blocked: the parked connection's close is
        # not noticed before the next request reuses it
        first.stop()
        servers.append(FakeUpstreamServer(FakeUpstreamConfig(tokens_per_second=0), port=origin.port).start())
        assert not parked.lost
        status, chunks, _ = await stream(client, origin)
        assert status == 200 and chunks
        assert client.idle[origin][-1][1] is not parked
        await client.close()

    try:
        run(main())
    finally:
        for server in servers:
            server.stop()


def test_refused_connection_raises_oserror():
    async def main():
        client = UpstreamClient(connect_timeout=1)
        with pytest.raises(OSError):
            await client.request(Origin.parse("http://127.0.0.1:9"), "GET", "/", {})
        await client.close()

    run(main())


def test_a_silent_upstream_hits_the_read_timeout(upstream):
    server = upstream(hang=True)
    origin = Origin.parse(server.url)

    async def main():
        client = UpstreamClient(sweep_s=0.05)
        start = time.perf_counter()
        with pytest.raises(UpstreamReadTimeout):
            await client.request(origin, "POST", "/v1/chat/completions", HEADERS, BODY, read_timeout=0.3)
        assert 0.25 < time.perf_counter() - start < 2
        await client.close()

    run(main())
    wait_until(lambda: server.app.counters.running == 0, 5, "the upstream never saw the disconnect")


def test_closing_a_response_mid_stream_aborts_the_upstream_request(upstream):
    server = upstream(num_tokens=100, tokens_per_second=20)
    origin = Origin.parse(server.url)

    async def main():
        client = UpstreamClient()
        response = await client.request(origin, "POST", "/v1/chat/completions", HEADERS, BODY)
        await response.read()
        assert server.app.counters.running == 1
        response.close()
        await client.close()

    run(main())
    wait_until(lambda: server.app.counters.running == 0, 5, "the upstream kept generating")


def test_an_upstream_that_dies_mid_stream_raises_closed():
    config = FakeUpstreamConfig(num_tokens=100, tokens_per_second=50)
    server = FakeUpstreamServer(config).start()
    origin = Origin.parse(server.url)

    async def main():
        client = UpstreamClient()
        response = await client.request(origin, "POST", "/v1/chat/completions", HEADERS, BODY)
        await response.read()
        await asyncio.get_running_loop().run_in_executor(None, server.stop)
        with pytest.raises(UpstreamClosed):
            while await response.read():
                pass
        response.close()
        await client.close()

    run(main())


def test_request_encoding_refuses_header_injection():
    origin = Origin.parse("http://h:81")
    raw = encode_request(origin, "POST", "/p", {"x-a": "1"}, b"{}")
    assert raw == b"POST /p HTTP/1.1\r\nhost: h:81\r\nx-a: 1\r\ncontent-length: 2\r\n\r\n{}"
    with pytest.raises(ValueError):
        encode_request(origin, "POST", "/p", {"x-a": "1\r\nevil: yes"}, b"")
    assert Origin.parse("https://h") == Origin("https", "h", 443)
