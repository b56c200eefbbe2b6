"""A stream's stored events read back the same before and after the store compacts them."""

from __future__ import annotations

import asyncio
import random
import tracemalloc

from kvserve.gateway.store.event_log import EventLog
from kvserve.gateway.store.memory_store import MemoryStore
from kvserve.gateway.store.streams import StreamRecorder


def sse(i: int, text: str) -> bytes:
    return b'id: %d\ndata: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n' % (i, text.encode())


def test_every_start_reads_the_same_events_as_a_list_slice_whatever_the_form():
    rng = random.Random(7)
    for _ in range(200):
        events = [rng.randbytes(rng.randrange(0, 40)) for _ in range(rng.randrange(0, 15))]
        log, cut = EventLog(), rng.randrange(0, len(events) + 1)
        log.extend(events[:cut])
        log.compact()
        log.extend(events[cut:])  # a late write keeps the compacted form
        assert len(log) == len(events) and log.nbytes == sum(map(len, events))
        assert log.compacted == bool(events[:cut])  # nothing to join at finishing: it stays a list
        for start in range(-2, len(events) + 3):
            assert log.since(start) == events[start:]


def test_a_resume_after_the_stream_finished_gets_the_bytes_it_would_have_got_while_it_ran():
    store = MemoryStore(1000, max_bytes=1 << 20)
    events = [sse(i, "word%d" % i) for i in range(40)] + [b"id: 40\ndata: [DONE]\n\n"]

    async def go():
        recorder = StreamRecorder(store, "stream:t:r", 300, 30)
        for i in range(0, 30, 3):  # batches as the relay hands them over
            recorder.add(events[i:i + 3])
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        while_running = [await store.read("stream:t:r", start) for start in range(0, 32)]
        recorder.add(events[30:], done=True)
        await asyncio.wait_for(recorder.task, 1)
        after = [await store.read("stream:t:r", start) for start in range(0, 43)]
        return while_running, after

    while_running, after = asyncio.run(go())
    assert store.finished["stream:t:r"].events.compacted
    for start, (running_events, done) in enumerate(while_running):
        assert not done and running_events == events[start:30]
        assert after[start][0][:len(running_events)] == running_events
    assert all(after[start] == (events[start:], True) for start in range(43))


def test_a_finished_stream_holds_a_few_objects_however_many_events_it_had():
    async def go(store: MemoryStore, count: int) -> None:
        for i in range(200):
            key = "stream:t:%d" % i
            await store.append(key, [sse(j, "w") for j in range(count // 2)], False, 300)
            await store.append(key, [sse(j, "w") for j in range(count // 2, count)], True, 300)

    blocks = {}
    for count in (10, 200):
        store = MemoryStore(1000, max_bytes=1 << 30)
        tracemalloc.start()
        asyncio.run(go(store, count))
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        blocks[count] = sum(s.count for s in snapshot.statistics("filename")) / 200
    assert blocks[200] < blocks[10] + 2  # not ~190 more: one blob and one offsets array per stream
