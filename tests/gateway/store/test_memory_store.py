"""The in-process store's byte budget: what it charges, what goes first, and expiry (on a fake clock)."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import pytest

from kvserve.gateway.store.event_log import COMPACT_EVENT_OVERHEAD, EVENT_OVERHEAD
from kvserve.gateway.store.memory_store import STREAM_OVERHEAD, MemoryStore, value_size
from kvserve.gateway.store.streams import StreamRecorder

KB = 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro):
    return asyncio.run(coro)


def store(max_bytes: int, clock: Clock | None = None, max_entries: int = 1_000_000) -> MemoryStore:
    return MemoryStore(max_entries, clock or Clock(), max_bytes=max_bytes)


def stream_bytes(key: str, events: list[bytes], finished: bool = False) -> int:
    """What a stream is charged: a finished one's events are compacted (an offset each, no object)."""
    per_event = COMPACT_EVENT_OVERHEAD if finished else EVENT_OVERHEAD
    return len(key) + STREAM_OVERHEAD + sum(len(e) + per_event for e in events)


def test_values_past_the_budget_go_least_recently_used_first():
    s = store(10 * KB)

    async def go():
        for i in range(30):
            await s.set(f"cache:{i}", b"x" * 1000, 60)
            if i >= 5:
                assert await s.get("cache:0") is not None  # kept in use: never the least recent
        return [i for i in range(30) if await s.get(f"cache:{i}") is not None]

    kept = run(go())
    assert s.usage.total <= 10 * KB
    assert kept[0] == 0 and kept[1:] == list(range(30 - len(kept) + 1, 30))  # the newest, and the one in use
    assert s.usage.entries["cache"] == len(kept)
    assert s.usage.bytes["cache"] == sum(value_size(f"cache:{i}", b"x" * 1000) for i in kept)
    assert s.usage.evictions["cache", "budget"] == 30 - len(kept)


def test_finished_streams_go_first_oldest_first_then_values_then_running_streams():
    s = store(20 * KB)
    event = b"data: " + b"t" * 994

    async def go():
        await s.append("stream:a:running", [event] * 3, False, 300)
        await s.set("idem:a:k:1", b"answer" * 100, 60)
        for name in ("old", "mid", "new"):
            await s.append(f"stream:a:{name}", [event] * 3, True, 30)
        assert s.usage.total < 20 * KB and not s.usage.evictions
        await s.append("stream:a:big", [event] * 9, False, 300)  # needs 2 finished streams' room
        assert await s.read("stream:a:old", 0) is None and await s.read("stream:a:mid", 0) is None
        assert (await s.read("stream:a:new", 0)) == ([event] * 3, True)
        assert await s.get("idem:a:k:1") is not None and (await s.read("stream:a:running", 1)) == ([event] * 2, False)
        await s.append("stream:a:big", [event] * 8, False, 300)  # then the value, then the oldest running stream
        assert await s.read("stream:a:new", 0) is None and await s.get("idem:a:k:1") is None
        assert await s.read("stream:a:running", 0) is None  # dropped: a resume gets 404
        await s.append("stream:a:running", [event], True, 30)  # its generation goes on: nothing is kept
        assert await s.read("stream:a:running", 0) is None
        assert (await s.read("stream:a:big", 16)) == ([event], False)

    run(go())
    assert s.usage.total <= 20 * KB
    assert s.usage.evictions == {("stream", "budget"): 4, ("idem", "budget"): 1}


def test_a_finished_stream_is_kept_only_its_short_ttl_and_the_charges_return_to_zero():
    clock = Clock()
    s = store(1 << 20, clock)

    async def go():
        await s.append("stream:t:done", [b"data: 1"], False, 300)
        await s.append("stream:t:done", [b"data: [DONE]"], True, 5)
        await s.append("stream:t:live", [b"data: 1"], False, 300)
        await s.set("cache:k", b"v", 60)
        assert s.usage.bytes["stream"] == stream_bytes("stream:t:done", [b"data: 1", b"data: [DONE]"], True) + \
            stream_bytes("stream:t:live", [b"data: 1"])
        clock.now += 6
        assert await s.read("stream:t:done", 0) is None and await s.read("stream:t:live", 0) is not None
        await s.set("cache:other", b"w", 1)  # a write prunes the finished streams due
        assert s.usage.entries["stream"] == 1
        clock.now += 301
        await s.set("cache:last", b"w", 1)  # the periodic sweep takes expired values and streams
        assert (s.usage.entries["cache"], s.usage.entries["stream"]) == (1, 0)
        await s.delete("cache:last")

    run(go())
    assert s.usage.total == 0 and sum(s.usage.entries.values()) == 0


def test_a_stream_longer_than_its_byte_limit_stops_being_recorded():
    s = store(1 << 20)

    async def go():
        recorder = StreamRecorder(s, "stream:t:long", 300, 30, max_bytes=2000)
        for _ in range(5):
            recorder.add([b"data: " + b"x" * 500])
            await asyncio.sleep(0)
        recorder.finish()
        await asyncio.wait_for(recorder.task, 1)
        short = StreamRecorder(s, "stream:t:short", 300, 30, max_bytes=2000)
        short.add([b"data: 1"])
        short.finish()
        await asyncio.wait_for(short.task, 1)
        return await s.read("stream:t:long", 0), await s.read("stream:t:short", 0)

    long, short = run(go())
    assert long is None and short == ([b"data: 1"], True)
    assert s.usage.entries["stream"] == 1


@pytest.mark.parametrize("count", [2000])
def test_many_writes_keep_the_charged_total_equal_to_what_is_held(count):
    clock = Clock()
    s = store(64 * KB, clock)

    async def go():
        for i in range(count):  # 5 streams running at a time, each finished 5 writes after it began
            clock.now += 0.01
            await s.append(f"stream:t:{i}", [b"data: %d" % i] * 40, False, 300)
            if i >= 5:
                await s.append(f"stream:t:{i - 5}", [b"data: [DONE]"], True, 30)
            await s.set(f"cache:{i % 97}", b"v" * (i % 500), 10)

    run(go())
    held = sum(value_size(k, v) for k, (_, v) in s.values.items())
    held += sum(e.size for e in (*s.running.values(), *s.finished.values()))
    assert s.usage.total == held <= 64 * KB
    assert s.usage.evictions["stream", "budget"] > 0 and s.usage.evictions["cache", "budget"] > 0
    assert s.usage.evictions["stream", "budget"] > 0 and s.usage.evictions["cache", "budget"] > 0


@pytest.mark.parametrize("kind,events", [("finished", 8), ("finished", 120), ("running", 8), ("running", 120),
                                         ("values", 0)])
def test_the_charged_bytes_are_within_a_tenth_of_what_python_allocates_for_them(kind, events):
    """The budget is a memory bound only if the charges follow the objects really held."""
    s = store(1 << 40)

    async def fill() -> None:
        for i in range(500):
            if kind == "values":
                await s.set(f"cache:{i:064x}", b'{"content":"%d%s"}' % (i, b"w" * 200), 300)
                continue
            batch = [b'id: %d\ndata: {"choices":[{"delta":{"content":"w%d"}}]}\n\n' % (j, i) for j in range(events)]
            await s.append(f"stream:anonymous:{i:032x}", batch[:events // 2], False, 300)
            await s.append(f"stream:anonymous:{i:032x}", batch[events // 2:], kind == "finished", 300)

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    run(fill())
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert 0.9 * held <= s.usage.total <= 1.1 * held
