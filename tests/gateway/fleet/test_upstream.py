"""The upstream HTTP client against a real fake upstream on loopback."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from kvserve.bench.fake_upstream import FakeUpstreamConfig, FakeUpstreamServer
from kvserve.gateway.fleet.pacer import StreamPacer
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


def test_a_busy_gateway_relays_a_streams_chunks_together_but_never_holds_the_first(upstream):
    server = upstream(num_tokens=24, tokens_per_second=100)  # a token every 10 ms
    origin = Origin.parse(server.url)

    async def main():
        relaxed = UpstreamClient()
        _, one_by_one, _ = await stream(relaxed, origin)
        busy = UpstreamClient(pacer=StreamPacer(0.05))
        busy.pacer.interval_s = 0.05  # as update() sets it when the core is busy
        start = time.perf_counter()
        response = await busy.request(origin, "POST", "/v1/chat/completions", HEADERS, BODY, 5.0)
        first = await response.read()
        first_at = time.perf_counter() - start
        paced = [first]
        while chunk := await response.read():
            paced.append(chunk)
        response.release()
        await relaxed.close()
        await busy.close()
        return one_by_one, paced, first_at

    one_by_one, paced, first_at = run(main())
    assert b"".join(paced).count(b"\n\n") == b"".join(one_by_one).count(b"\n\n")
    assert len(one_by_one) >= 20  # each token on its own
    assert len(paced) <= 12  # ~5 tokens per 50 ms read
    assert first_at < 0.2  # the first chunk was not held


def test_the_pacer_turns_on_above_busy_and_off_below_idle():
    cpu, clock = [0.0], [0.0]
    pacer = StreamPacer(0.01, cpu=lambda: cpu[0], clock=lambda: clock[0])

    def tick(share: float) -> float:
        clock[0] += 1.0
        cpu[0] += share
        pacer.update()
        return pacer.interval_s

    assert [tick(s) for s in (0.3, 0.7, 0.5, 0.45, 0.35, 0.5)] == [0.0, 0.01, 0.01, 0.01, 0.0, 0.0]
