"""Short-lived shared state: cached answers, idempotent answers, and resumable streams' events.

`MemoryStore` (memory_store.py) keeps it in the process under one byte budget;
`RedisStore` in Redis, where every gateway sees it. Both expire entries after their TTL.
Redis failures surface as `RedisUnavailable`; callers treat them as a miss (or a stream
that cannot resume).
"""

from __future__ import annotations

from typing import Protocol

from kvserve.gateway.store.memory_store import MemoryStore
from kvserve.gateway.store.redis_link import RedisLink

__all__ = ["MemoryStore", "RedisStore", "Store"]


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def claim(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Set `key` only if it holds nothing; True when this call set it."""

    async def delete(self, key: str) -> None:
        """Forget a value or a stream."""

    async def append(self, key: str, items: list[bytes], done: bool, ttl_s: float) -> None:
        """Add events to a stream (and mark it finished when `done`); the stream is kept `ttl_s`
        from this call (the recorder passes the shorter finished-stream TTL with `done`)."""

    async def read(self, key: str, start: int) -> tuple[list[bytes], bool] | None:
        """A stream's events from index `start`, and whether it is finished; None if unknown."""


class RedisStore:
    """Entries as Redis strings; a stream as a list `<key>` plus a flag `<key>:done`."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link

    async def get(self, key: str) -> bytes | None:
        return await self.link.execute("get", "GET", self.link.key(key))

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self.link.execute("set", "SET", self.link.key(key), value, "PX", millis(ttl_s))

    async def claim(self, key: str, value: bytes, ttl_s: float) -> bool:
        done = await self.link.execute("claim", "SET", self.link.key(key), value, "PX", millis(ttl_s), "NX")
        return done is not None

    async def delete(self, key: str) -> None:
        name = self.link.key(key)
        await self.link.execute("delete", "DEL", name, name + ":done")

    async def append(self, key: str, items: list[bytes], done: bool, ttl_s: float) -> None:
        name, ttl = self.link.key(key), millis(ttl_s)
        commands: list[tuple] = [("RPUSH", name, *items)] if items else []
        commands += [("PEXPIRE", name, ttl), ("SET", name + ":done", b"1" if done else b"0", "PX", ttl)]
        await self.link.call("append", lambda: self.link.mux.transaction(commands))

    async def read(self, key: str, start: int) -> tuple[list[bytes], bool] | None:
        name = self.link.key(key)
        events, done = await self.link.call(
            "read", lambda: self.link.mux.transaction([("LRANGE", name, start, -1), ("GET", name + ":done")]))
        if done is None:
            return None
        return events, done == b"1"


def millis(seconds: float) -> int:
    """A TTL in Redis's PX milliseconds (at least 1: PX 0 is an error)."""
    return max(1, int(seconds * 1000))
