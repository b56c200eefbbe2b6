"""One pipelined Redis connection for the request path.

Every request makes a few Redis calls (admit, cache lookup, settle, store). Through
redis-py's asyncio pool each costs ~50-60 us of CPU (pool checkout, connection checks,
command objects); here a command is one `transport.write` of its RESP bytes, and the
replies, parsed by hiredis's C reader, resolve the waiting futures in order (Redis
answers a connection's commands in the order they came): ~7-14 us (measured on the dev
box, docs/results). Commands from all requests share the connection, so none waits for
a free one.

A call that gets no reply within `timeout_s` fails with TimeoutError and closes the
connection (the replies behind it could no longer be matched); a lost connection fails
its pending calls with ConnectionError. The next call connects again. `RedisLink` turns
both into its outage handling.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import NoScriptError, ResponseError

Arg = bytes | str | int | float


class RedisMux:
    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL: {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 6379
        self.path = parts.path  # unix socket
        db = parts.path.strip("/") if parts.scheme != "unix" else ""
        self.setup: list[tuple[Arg, ...]] = []
        if parts.password:
            user = unquote(parts.username or "")
            self.setup.append(("AUTH", user, unquote(parts.password)) if user else ("AUTH", unquote(parts.password)))
        if db and db != "0":
            self.setup.append(("SELECT", int(db)))
        self.timeout_s = timeout_s
        self.conn: _Connection | None = None
        self.connecting: asyncio.Future[_Connection] | None = None

    async def execute(self, *args: Arg) -> Any:
        conn = self.conn if self.conn is not None and self.conn.open else await self._connect()
        return await conn.send([args])[0]

    async def transaction(self, commands: list[tuple[Arg, ...]]) -> list[Any]:
        """MULTI, the commands, EXEC, written at once (nothing interleaves); EXEC's replies."""
        conn = self.conn if self.conn is not None and self.conn.open else await self._connect()
        replies = await asyncio.gather(*conn.send([("MULTI",), *commands, ("EXEC",)]), return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies[-1]

    def script(self, source: str) -> MuxScript:
        return MuxScript(self, source)

    def reset(self) -> None:
        """Drop the connection (the next call makes a new one)."""
        if self.conn is not None:
            self.conn.close(ConnectionError("redis connection reset"))
            self.conn = None

    async def close(self) -> None:
        self.reset()

    async def _connect(self) -> _Connection:
        if self.connecting is None:
            self.connecting = asyncio.ensure_future(self._open())
        connecting = self.connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if self.connecting is connecting and connecting.done():
                self.connecting = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        make = lambda: _Connection(self.timeout_s)  # noqa: E731
        if self.scheme == "unix":
            opening = loop.create_unix_connection(make, self.path)
        else:
            context = ssl.create_default_context() if self.scheme == "rediss" else None
            opening = loop.create_connection(make, self.host, self.port, ssl=context)
        _, conn = await asyncio.wait_for(opening, self.timeout_s)
        for reply in conn.send(self.setup):
            await reply  # AUTH / SELECT errors raise here
        self.conn = conn
        return conn


class MuxScript:
    """A Lua script run by EVALSHA, loaded with EVAL when Redis does not know it (first use,
    or after a restart)."""

    def __init__(self, mux: RedisMux, source: str) -> None:
        self.mux = mux
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: list[Arg]) -> Any:
        try:
            return await self.mux.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.mux.execute("EVAL", self.source, len(keys), *keys, *args)


def _error(message: str) -> ResponseError:
    return NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)


class _Connection(asyncio.Protocol):
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader(replyError=_error)
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def send(self, commands: list[tuple[Arg, ...]]) -> list[asyncio.Future[Any]]:
        if not self.open or self.transport is None:
            raise ConnectionError("redis connection closed")
        now = self.loop.time()
        futures = []
        for _ in commands:
            future = self.loop.create_future()
            self.waiting.append((future, now))
            futures.append(future)
        self.transport.write(b"".join(pack(c) for c in commands))
        if self.watchdog is None:
            self.watchdog = self.loop.call_at(now + self.timeout_s, self._check)
        return futures

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while (reply := self.reader.gets()) is not False:
            if not waiting:
                self.close(ConnectionError("redis sent a reply nobody asked for"))
                return
            future, _ = waiting.popleft()
            if not future.done():
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(ConnectionError("redis connection lost"))
        self.open = False

    def close(self, error: BaseException) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.abort()
        self._fail_all(error)

    def _check(self) -> None:
        """The oldest call's deadline: past it, the connection is stuck."""
        self.watchdog = None
        if not self.waiting:
            return
        deadline = self.waiting[0][1] + self.timeout_s
        if self.loop.time() >= deadline:
            self.close(TimeoutError(f"redis did not answer within {self.timeout_s}s"))
        else:
            self.watchdog = self.loop.call_at(deadline, self._check)

    def _fail_all(self, error: BaseException) -> None:
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None


def pack(args: tuple[Arg, ...]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, bool):
            raise TypeError("redis arguments cannot be booleans")
        elif isinstance(arg, int):
            arg = b"%d" % arg
        elif isinstance(arg, float):
            arg = repr(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)
