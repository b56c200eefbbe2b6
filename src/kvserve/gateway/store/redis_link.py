"""The gateway's Redis connection, and what happens when Redis goes away.

Every Redis call goes through `RedisLink.call`. A connection error or a timeout marks
Redis down for `retry_after_s` (calls in that time fail at once instead of waiting on
a dead server), counts a metric and logs one line per outage; the first call that
works again logs the recovery. Callers turn `RedisUnavailable` into fail-open or
fail-closed behaviour. `watch` pings Redis in the background, so that `down` (the
`kvserve:gateway_redis_up` gauge) says how Redis is even when no request needs it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kvserve.gateway.access_config import RedisConfig
from kvserve.gateway.store.redis_mux import MuxScript, RedisMux

log = logging.getLogger("kvserve.gateway")
T = TypeVar("T")


class RedisUnavailable(Exception):
    """Redis did not answer (down, unreachable, or too slow)."""


class RedisLink:
    """An asyncio Redis client with outage tracking."""

    def __init__(self, config: RedisConfig, on_error: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert config.url is not None
        self.client = aioredis.Redis.from_url(config.url, socket_timeout=config.timeout_s,
                                              socket_connect_timeout=config.timeout_s, retry_on_timeout=False)
        self.mux = RedisMux(config.url, config.timeout_s)  # the request path's calls (redis_mux.py)
        self.prefix = config.prefix
        self.retry_after_s = config.retry_after_s
        self.on_error = on_error
        self.clock = clock
        self.down_until = 0.0
        self.down = False
        self.errors: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError,
                                                        TimeoutError)
        # what a pooled connection whose server restarted raises (no timeouts: those are not retried)
        self.stale: tuple[type[BaseException], ...] = (RedisConnectionError, ConnectionError)

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def script(self, source: str) -> MuxScript:
        """A Lua script (EVALSHA, loaded again after a Redis restart)."""
        return self.mux.script(source)

    async def execute(self, op: str, *args: Any) -> Any:
        """One command on the request path's connection, e.g. execute("get", "GET", name)."""
        return await self.call(op, lambda: self.mux.execute(*args))

    async def call(self, op: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis operation; raises RedisUnavailable while Redis is down."""
        if self.down and self.clock() < self.down_until:
            raise RedisUnavailable(op)
        try:
            result = await self._attempt(make)
        except self.errors as exc:
            self._failed(op, exc)
            raise RedisUnavailable(op) from None
        if self.down:
            self.down = False
            log.warning("redis is reachable again")
        return result

    async def watch(self, every_s: float) -> None:
        """Ping every `every_s` seconds until cancelled (a failed ping marks Redis down like any call)."""
        while True:
            try:
                await self.call("ping", lambda: self.mux.execute("PING"))
            except RedisUnavailable:
                pass
            await asyncio.sleep(every_s)

    async def _attempt(self, make: Callable[[], Awaitable[T]]) -> T:
        """One operation, tried again once on a fresh connection when a pooled one broke:
        after a Redis restart every idle pooled connection is dead (so all are dropped), and
        that is no outage. A timeout is not retried (a slow Redis would be waited on twice)."""
        try:
            return await make()
        except self.stale as exc:
            if self.down:
                raise
            log.debug("redis connection broke (%s); retrying once on a fresh one", type(exc).__name__)
            await self.client.connection_pool.disconnect(inuse_connections=False)
            self.mux.reset()
            return await make()

    def _failed(self, op: str, exc: BaseException) -> None:
        self.on_error(op)
        self.down_until = self.clock() + self.retry_after_s
        if not self.down:
            self.down = True
            log.error("redis unavailable (%s during %s); retrying every %.1fs", type(exc).__name__, op,
                      self.retry_after_s)

    async def close(self) -> None:
        await self.mux.close()
        await self.client.aclose()
