"""The pipelined Redis connection of the request path, against a real redis-server."""

from __future__ import annotations

import asyncio
import socket

import pytest
import redis

from kvserve.gateway.access_config import RedisConfig
from kvserve.gateway.store.redis_link import RedisLink, RedisUnavailable
from kvserve.gateway.store.redis_mux import RedisMux, pack
from tests.gateway.conftest import RedisServer


def run(coro):
    return asyncio.run(coro)


def test_many_concurrent_calls_each_get_their_own_reply(redis_server, redis_prefix):
    async def main():
        mux = RedisMux(redis_server.url, 2.0)
        await asyncio.gather(*(mux.execute("SET", f"{redis_prefix}:{i}", f"v{i}") for i in range(300)))
        got = await asyncio.gather(*(mux.execute("GET", f"{redis_prefix}:{i}") for i in range(300)))
        await mux.close()
        return got

    assert run(main()) == [f"v{i}".encode() for i in range(300)]


def test_errors_reach_their_caller_only(redis_server, redis_prefix):
    async def main():
        mux = RedisMux(redis_server.url, 2.0)
        await mux.execute("SET", f"{redis_prefix}:s", "text")
        results = await asyncio.gather(mux.execute("INCR", f"{redis_prefix}:s"), mux.execute("PING"),
                                       return_exceptions=True)
        await mux.close()
        return results

    error, pong = run(main())
    assert isinstance(error, redis.ResponseError) and "not an integer" in str(error)
    assert pong in (b"PONG", "PONG")


def test_script_is_loaded_again_after_redis_forgets_it(redis_server, redis_prefix):
    async def main():
        mux = RedisMux(redis_server.url, 2.0)
        script = mux.script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        first = await script(keys=[f"{redis_prefix}:n"], args=[2])
        await mux.execute("SCRIPT", "FLUSH")
        second = await script(keys=[f"{redis_prefix}:n"], args=[3])
        await mux.close()
        return first, second

    assert run(main()) == (2, 5)


def test_transaction_and_database_from_the_url(redis_server, redis_prefix):
    async def main():
        mux = RedisMux(redis_server.url.rsplit("/", 1)[0] + "/3", 2.0)
        replies = await mux.transaction([("RPUSH", f"{redis_prefix}:l", b"a", b"b"), ("LRANGE", f"{redis_prefix}:l", 0, -1)])
        await mux.close()
        return replies

    assert run(main()) == [2, [b"a", b"b"]]
    assert redis.Redis(port=redis_server.port, db=3).llen(f"{redis_prefix}:l") == 2
    assert redis.Redis(port=redis_server.port, db=0).llen(f"{redis_prefix}:l") == 0


def test_a_server_that_never_answers_times_out_and_marks_redis_down():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does) and never replies
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    errors: list[str] = []

    async def main():
        link = RedisLink(RedisConfig(url=url, timeout_s=0.2), errors.append)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(RedisUnavailable):
            await link.execute("get", "GET", "k")
        waited = loop.time() - began
        with pytest.raises(RedisUnavailable):  # down: fails at once, no second wait
            await link.execute("get", "GET", "k")
        await link.close()
        return waited, loop.time() - began - waited

    try:
        waited, second = run(main())
    finally:
        silent.close()
    assert 0.15 <= waited < 1.0 and second < 0.05 and errors == ["get"]


def test_a_restarted_redis_is_used_again_without_an_outage(tmp_path, redis_prefix):
    server = RedisServer(tmp_path).start()
    errors: list[str] = []

    async def main():
        link = RedisLink(RedisConfig(url=server.url, timeout_s=0.5), errors.append)
        await link.execute("set", "SET", f"{redis_prefix}:a", "1")
        server.kill()
        await asyncio.sleep(0.1)
        server.start()
        await link.execute("set", "SET", f"{redis_prefix}:a", "2")  # the old connection is dead: a new one
        value = await link.execute("get", "GET", f"{redis_prefix}:a")
        await link.close()
        return value

    try:
        assert run(main()) == b"2"
    finally:
        server.kill()
    assert errors == []


def test_commands_are_packed_as_resp_arrays():
    assert pack(("SET", "k", b"v\r\n", 5, 1.5)) == b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n5\r\n$3\r\n1.5\r\n"
    with pytest.raises(TypeError):
        pack(("SET", "k", True))
