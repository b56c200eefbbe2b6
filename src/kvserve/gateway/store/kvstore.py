"""Short-lived shared state: cached answers, idempotent answers, and resumable streams' events.

`MemoryStore` keeps it in the process (bounded, LRU); `RedisStore` in Redis, where every
gateway sees it. Both expire entries after their TTL. Redis failures surface as
`RedisUnavailable`; callers treat them as a miss (or a stream that cannot resume).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Protocol

from kvserve.gateway.store.redis_link import RedisLink


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def claim(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Set `key` only if it holds nothing; True when this call set it."""

    async def delete(self, key: str) -> None: ...

    async def append(self, key: str, items: list[bytes], done: bool, ttl_s: float) -> None:
        """Add events to a stream (and mark it finished when `done`)."""

    async def read(self, key: str, start: int) -> tuple[list[bytes], bool] | None:
        """A stream's events from index `start`, and whether it is finished; None if unknown."""


class MemoryStore:
    """In-process entries, each with its own deadline; the oldest go first past `max_entries`."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self.values: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.streams: dict[str, tuple[float, list[bytes], bool]] = {}

    async def get(self, key: str) -> bytes | None:
        entry = self.values.get(key)
        if entry is None or entry[0] < self.clock():
            return None
        self.values.move_to_end(key)
        return entry[1]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.values[key] = (self.clock() + ttl_s, value)
        self.values.move_to_end(key)
        while len(self.values) > self.max_entries:
            self.values.popitem(last=False)

    async def claim(self, key: str, value: bytes, ttl_s: float) -> bool:
        if await self.get(key) is not None:
            return False
        await self.set(key, value, ttl_s)
        return True

    async def delete(self, key: str) -> None:
        self.values.pop(key, None)

    async def append(self, key: str, items: list[bytes], done: bool, ttl_s: float) -> None:
        now = self.clock()
        if len(self.streams) > self.max_entries:
            self.streams = {k: v for k, v in self.streams.items() if v[0] >= now}
        _, events, _ = self.streams.get(key, (0.0, [], False))
        events.extend(items)
        self.streams[key] = (now + ttl_s, events, done)

    async def read(self, key: str, start: int) -> tuple[list[bytes], bool] | None:
        entry = self.streams.get(key)
        if entry is None or entry[0] < self.clock():
            return None
        return entry[1][start:], entry[2]


class RedisStore:
    """Entries as Redis strings; a stream as a list `<key>` plus a flag `<key>:done`."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.client = link.client

    async def get(self, key: str) -> bytes | None:
        return await self.link.call("get", lambda: self.client.get(self.link.key(key)))

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self.link.call("set", lambda: self.client.set(self.link.key(key), value, px=int(ttl_s * 1000)))

    async def claim(self, key: str, value: bytes, ttl_s: float) -> bool:
        done = await self.link.call("claim", lambda: self.client.set(self.link.key(key), value, px=int(ttl_s * 1000),
                                                                     nx=True))
        return bool(done)

    async def delete(self, key: str) -> None:
        await self.link.call("delete", lambda: self.client.delete(self.link.key(key)))

    async def append(self, key: str, items: list[bytes], done: bool, ttl_s: float) -> None:
        name, ttl = self.link.key(key), int(ttl_s * 1000)
        pipe = self.client.pipeline(transaction=True)
        if items:
            pipe.rpush(name, *items)
        pipe.pexpire(name, ttl)
        pipe.set(name + ":done", b"1" if done else b"0", px=ttl)
        await self.link.call("append", pipe.execute)

    async def read(self, key: str, start: int) -> tuple[list[bytes], bool] | None:
        name = self.link.key(key)
        pipe = self.client.pipeline(transaction=True)
        pipe.lrange(name, start, -1)
        pipe.get(name + ":done")
        events, done = await self.link.call("read", pipe.execute)
        if done is None:
            return None
        return events, done == b"1"
