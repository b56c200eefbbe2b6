"""The response tap: stands between the proxy and the client's ASGI `send`.

It adds the rate-limit headers, reads the answer's usage (from a JSON body, or from the
usage chunk the gateway asked the upstream for, which it drops again when the client
did not ask for it), numbers SSE events with `id:` fields and hands them to a stream
recorder, and keeps what the cache and idempotency need. Once the client has gone it
stops forwarding but lets the proxy read on, so a resumable stream still completes.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from kvserve.gateway.store.cache import StreamAssembler
from kvserve.gateway.store.streams import StreamRecorder

Send = Callable[[dict[str, Any]], Awaitable[None]]
EVENT_END = b"\n\n"
MAX_CAPTURE = 8 << 20  # JSON answers kept for usage/cache/idempotency up to this size


class ResponseTap:
    """An ASGI `send` wrapper for one request (see the module docstring)."""

    def __init__(self, send: Send, stream: bool, chat: bool, wants_usage: bool,
                 headers: list[tuple[bytes, bytes]], recorder: StreamRecorder | None = None,
                 assemble: bool = False) -> None:
        self.send = send
        self.stream = stream
        self.wants_usage = wants_usage
        self.headers = headers
        self.recorder = recorder
        self.chat = chat
        self.assembler = StreamAssembler(chat) if assemble and stream else None
        self.status = 0
        self.usage: dict[str, Any] | None = None
        self.body = bytearray()
        self.client_gone = False
        self.pending = b""  # an SSE event split across reads
        self.next_id = 0
        self.passthrough = stream and recorder is None  # events need no numbering

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = list(message.get("headers", ()))
            if self.status < 400:
                headers += self.headers
            await self._forward({**message, "headers": headers})
            return
        body, more = message.get("body", b""), message.get("more_body", False)
        if self.passthrough and not self.pending and body.endswith(EVENT_END) and no_usage(body):
            if self.assembler is not None:
                self.assembler.add(body)
            await self._forward(message)  # the common chunk: whole events, nothing to read or number
            return
        if self.stream and self.status == 200:
            body = self._events(body, more)
        elif self.status == 200 and len(self.body) + len(body) <= MAX_CAPTURE:
            self.body += body
        await self._forward({"type": "http.response.body", "body": body, "more_body": more})

    async def _forward(self, message: dict[str, Any]) -> None:
        if self.client_gone:
            return
        try:
            await self.send(message)
        except OSError:  # the client's connection broke: keep reading the upstream
            self.client_gone = True

    def leave(self) -> None:
        """The client disconnected (resumable streams): stop forwarding, keep going."""
        self.client_gone = True

    def _events(self, data: bytes, more: bool) -> bytes:
        data = self.pending + data
        *events, self.pending = data.split(EVENT_END)
        if not more and self.pending:
            events.append(self.pending)
            self.pending = b""
        out = [framed for event in events if event and (framed := self._event(event)) is not None]
        if self.recorder is not None:
            self.recorder.add(out, done=not more)
        return b"".join(out)

    def _event(self, event: bytes) -> bytes | None:
        """One SSE event, with its id (None: dropped)."""
        if self.assembler is not None:
            self.assembler.add(event + EVENT_END)
        if not no_usage(event) and self._inspect(event) is False:
            return None
        if self.recorder is not None:
            event = b"id: %d\n" % self.next_id + event
            self.next_id += 1
        return event + EVENT_END

    def _inspect(self, event: bytes) -> bool:
        """Read usage; False for a usage-only chunk the client did not ask for."""
        data = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data or data == b"[DONE]":
            return True
        try:
            chunk = json.loads(data)
        except ValueError:
            return True
        usage = chunk.get("usage") if isinstance(chunk, dict) else None
        if not usage:
            return True
        self.usage = usage
        return self.wants_usage or bool(chunk.get("choices"))

    def json_usage(self) -> dict[str, Any] | None:
        """Usage of a complete JSON answer."""
        if self.stream or not self.body:
            return self.usage
        try:
            usage = json.loads(self.body).get("usage")
        except (ValueError, AttributeError):
            return None
        return usage if isinstance(usage, dict) else None


def no_usage(events: bytes) -> bool:
    """No event carries a usage object (kvserve and vLLM send `"usage":null` in every chunk
    when usage is asked for; the one that counts comes last)."""
    return events.count(b'"usage"') == events.count(b'"usage":null')
