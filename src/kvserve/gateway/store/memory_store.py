"""The in-process store under one byte budget: cached and idempotent answers, semantic-cache
indexes and answers, and resumable streams' events.

Every entry is charged its payload plus a fixed estimate of the Python objects that hold
it (`VALUE_OVERHEAD`, `STREAM_OVERHEAD`, and per event `EVENT_OVERHEAD` while a stream runs,
`COMPACT_EVENT_OVERHEAD` once it finished and its events were joined into one blob, see
event_log.py), so the charged total tracks the memory really held: tracemalloc's traced
bytes for 3,000 entries, less their payload, fitted over streams of 8, 34 and 120 events
(tests/gateway/store/test_memory_store.py checks them within 10%). When a write takes the
total past `max_bytes`, entries go in this order until it fits again:

1. finished streams, oldest finished first (a client resumes a moment after losing its
   connection, or never);
2. values (answers, indexes, Idempotency-Key holds), least recently used first;
3. running streams, oldest first: the stream goes on to its client, but can no longer be
   resumed (a resume gets 404, as after expiry); its events are freed, and its small
   record (`STREAM_OVERHEAD`) stays until it finishes, so that later events are not
   taken for a new stream.

Entries also expire after their TTL. Finished streams are pruned on every write (they
are in finishing order and share one TTL); the rest are swept every `SWEEP_S`.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from kvserve.gateway.store.event_log import EventLog

VALUE_OVERHEAD = 256  # bytes held per value beside its payload: key str, bytes header, tuple, dict slot
STREAM_OVERHEAD = 576  # per stream: key, record, event log (list, or blob and offsets), dict slots, deadline
SWEEP_S = 5.0  # expired values and running streams are dropped this often (finished ones on every write)
KINDS = ("cache", "idem", "sem", "stream", "fb")  # key prefixes (fb: feedback handles); others count as "other"


def kind_of(key: str) -> str:
    prefix = key.split(":", 1)[0]
    return prefix if prefix in KINDS else "other"


@dataclass(slots=True)
class StreamEntry:
    """One stream's events; `dropped`: evicted while running, so it takes no more events."""

    deadline: float
    base: int  # bytes charged for the record itself
    events: EventLog = field(default_factory=EventLog)
    done: bool = False
    size: int = 0  # base + events
    dropped: bool = False


@dataclass
class Usage:
    """What the store holds now, and what it has let go; read by the metrics collector."""

    bytes: Counter[str] = field(default_factory=Counter)  # kind -> charged bytes
    entries: Counter[str] = field(default_factory=Counter)  # kind -> entries
    evictions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, reason) -> entries

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    def add(self, kind: str, size: int, entries: int = 0) -> None:
        self.bytes[kind] += size
        self.entries[kind] += entries


class MemoryStore:
    """The `Store` of a gateway without Redis (see the module docstring). `max_entries`
    bounds the number of values too (the cache's old knob)."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic,
                 max_bytes: int = 256 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self.usage = Usage()
        self.values: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # least recently used first
        self.running: OrderedDict[str, StreamEntry] = OrderedDict()  # oldest first
        self.finished: OrderedDict[str, StreamEntry] = OrderedDict()  # finished first, first
        self.next_sweep = clock() + SWEEP_S

    async def get(self, key: str) -> bytes | None:
        entry = self.values.get(key)
        if entry is None or entry[0] < self.clock():
            return None
        self.values.move_to_end(key)
        return entry[1]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._pop_value(key)
        self.values[key] = (self.clock() + ttl_s, value)
        self.usage.add(kind_of(key), value_size(key, value), 1)
        while len(self.values) > self.max_entries:
            self._evict_value("entries")
        self._fit()

    async def claim(self, key: str, value: bytes, ttl_s: float) -> bool:
        if await self.get(key) is not None:
            return False
        await self.set(key, value, ttl_s)
        return True

    async def delete(self, key: str) -> None:
        self._pop_value(key)
        self._pop_stream(key)

    async def append(self, key: str, items: list[bytes], done: bool, ttl_s: float) -> None:
        now = self.clock()
        stream = self.running.get(key) or self.finished.get(key)
        if stream is None:
            base = len(key) + STREAM_OVERHEAD
            stream = self.running[key] = StreamEntry(now + ttl_s, base, size=base)
            self.usage.add("stream", stream.size, 1)
        if not stream.dropped:  # evicted while running: keep only the record, until it finishes
            stream.events.extend(items)
        stream.deadline = now + ttl_s
        if done and not stream.done:
            self._finish(key, stream)
        self._resize(stream)
        self._fit()

    async def read(self, key: str, start: int) -> tuple[list[bytes], bool] | None:
        stream = self.running.get(key) or self.finished.get(key)
        if stream is None or stream.dropped or stream.deadline < self.clock():
            return None
        return stream.events.since(start), stream.done

    def _finish(self, key: str, stream: StreamEntry) -> None:
        """Move a stream to the finished ones, its events compacted (and charged as such)."""
        stream.done = True
        self.running.pop(key, None)
        self.finished[key] = stream
        stream.events.compact()

    def _resize(self, stream: StreamEntry) -> None:
        """Charge a stream what its record and events hold now."""
        size = stream.base + stream.events.charge
        self.usage.add("stream", size - stream.size)
        stream.size = size

    def _fit(self) -> None:
        """Expire what is due, then evict (finished streams, values, running streams) to the budget."""
        self._expire()
        while self.usage.total > self.max_bytes and self.finished:
            key, stream = self.finished.popitem(last=False)
            self._forget_stream(stream, "budget")
        while self.usage.total > self.max_bytes and self.values:
            self._evict_value("budget")
        for stream in self.running.values():
            if self.usage.total <= self.max_bytes:
                break
            if not stream.dropped:
                self._drop(stream)

    def _expire(self) -> None:
        now = self.clock()
        while self.finished and next(iter(self.finished.values())).deadline < now:
            self._forget_stream(self.finished.popitem(last=False)[1], None)
        if now < self.next_sweep:
            return
        self.next_sweep = now + SWEEP_S
        for key in [k for k, (deadline, _) in self.values.items() if deadline < now]:
            self._pop_value(key)
        for key in [k for k, s in self.running.items() if s.deadline < now]:
            self._forget_stream(self.running.pop(key), None)

    def _evict_value(self, reason: str) -> None:
        key, (_, value) = self.values.popitem(last=False)
        kind = kind_of(key)
        self.usage.add(kind, -value_size(key, value), -1)
        self.usage.evictions[kind, reason] += 1

    def _pop_value(self, key: str) -> None:
        entry = self.values.pop(key, None)
        if entry is not None:
            self.usage.add(kind_of(key), -value_size(key, entry[1]), -1)

    def _pop_stream(self, key: str) -> None:
        stream = self.running.pop(key, None) or self.finished.pop(key, None)
        if stream is not None:
            self._forget_stream(stream, None)

    def _forget_stream(self, stream: StreamEntry, reason: str | None) -> None:
        self.usage.add("stream", -stream.size, -1)
        if reason is not None and not stream.dropped:
            self.usage.evictions["stream", reason] += 1

    def _drop(self, stream: StreamEntry) -> None:
        """Evict a running stream's events; its small record stays until it finishes."""
        freed = stream.size - stream.base
        stream.events, stream.size, stream.dropped = EventLog(), stream.base, True
        self.usage.add("stream", -freed)
        self.usage.evictions["stream", "budget"] += 1


def value_size(key: str, value: bytes) -> int:
    return len(key) + len(value) + VALUE_OVERHEAD
