"""Resumable streams: record a stream's SSE events, replay them after `Last-Event-ID`.

The recorder writes events behind the stream (one store call per batch, never on the
relay's path). A reconnecting client gets the stored events after the id it names and
then, while the original generation is still running (on this gateway or another one),
new events as they are stored, polled every `poll_s`; no second generation starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from kvserve.gateway.store.kvstore import Store
from kvserve.gateway.store.redis_link import RedisUnavailable
from kvserve.openai_error import OpenAIError

log = logging.getLogger("kvserve.gateway")
Send = Callable[[dict[str, Any]], Awaitable[None]]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def stream_key(tenant: str, request_id: str) -> str:
    return f"stream:{tenant}:{request_id}"


class StreamRecorder:
    """Appends one stream's events to the store in the background. A finished stream is
    kept `finished_ttl_s`; one whose events pass `max_bytes` is deleted and no longer
    recorded (it cannot be resumed: bytes written per request stay bounded)."""

    def __init__(self, store: Store, key: str, ttl_s: float, finished_ttl_s: float | None = None,
                 max_bytes: int = 1 << 20) -> None:
        self.store, self.key, self.ttl_s = store, key, ttl_s
        self.finished_ttl_s = ttl_s if finished_ttl_s is None else finished_ttl_s
        self.max_bytes = max_bytes
        self.recorded = 0  # bytes of events handed to the store
        self.pending: list[bytes] = []
        self.done = False
        self.wake = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())
        self.wake.set()  # create the entry at once: a reconnect may come before the first event

    def add(self, events: list[bytes], done: bool = False) -> None:
        if self.recorded <= self.max_bytes:
            self.recorded += sum(len(event) for event in events)
            self.pending.extend(events)
        self.done = self.done or done
        self.wake.set()

    def finish(self) -> None:
        """The stream ended (or broke): write what is left and mark it finished."""
        self.add([], done=True)

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            items, self.pending = self.pending, []
            done = self.done
            try:
                if self.recorded > self.max_bytes:
                    await self.store.delete(self.key)
                    log.info("stream %s: longer than streams.max_stream_bytes; it cannot be resumed", self.key)
                    return
                await self.store.append(self.key, items, done, self.finished_ttl_s if done else self.ttl_s)
            except RedisUnavailable:
                log.warning("stream %s: events not stored (redis down); it cannot be resumed", self.key)
                return
            if done:
                return


async def replay(store: Store, key: str, after: int, send: Send, poll_s: float, idle_s: float,
                 headers: list[tuple[bytes, bytes]]) -> int:
    """Send the events after index `after`, following the stream until it finishes.
    Returns the number of events sent; 404 if there is no such stream."""
    try:
        found = await store.read(key, after + 1)
    except RedisUnavailable:
        raise OpenAIError(503, "stored streams are unavailable right now", "service_unavailable", code="stream_store_unavailable") from None
    if found is None:
        raise OpenAIError(404, "no resumable stream with this request id (expired or never started)", code="stream_not_found")
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + headers})
    sent, last_progress = 0, time.monotonic()
    while True:
        events, done = found
        if events:
            await send({"type": "http.response.body", "body": b"".join(events), "more_body": not done})
            sent += len(events)
            last_progress = time.monotonic()
        if done:
            if not events:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return sent
        if time.monotonic() - last_progress > idle_s:
            error = OpenAIError(504, "the resumed stream stopped progressing", "server_error", code="stream_stalled")
            await send({"type": "http.response.body", "body": b"data: " + error.body_bytes() + b"\n\n"})
            return sent
        await asyncio.sleep(poll_s)
        found = await _read_or_none(store, key, after + 1 + sent)


async def _read_or_none(store: Store, key: str, start: int) -> tuple[list[bytes], bool]:
    try:
        found = await store.read(key, start)
    except RedisUnavailable:
        return [], False
    return found if found is not None else ([], True)
