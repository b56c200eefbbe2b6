"""An answer's text, collected as it passes: the primary's on its way to the client, or the
shadow's into a sink. Collecting is appending bytes; they are read once the answer ended."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from kvserve.gateway.store.cache import Entry, StreamAssembler, entry_from_json

Send = Callable[[dict[str, Any]], Awaitable[None]]
MAX_BYTES = 4 << 20  # a longer answer is not compared


@dataclass(frozen=True)
class Answer:
    text: str
    seconds: float  # from the capture's start to the last byte


class Capture:
    """An ASGI `send` that keeps a copy of the answer; with `send`, it forwards first."""

    def __init__(self, send: Send | None, chat: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.send = send
        self.chat = chat
        self.clock = clock
        self.started = clock()
        self.status = 0
        self.stream = False
        self.body = bytearray()
        self.ended: float | None = None
        self.done = asyncio.Event()

    async def __call__(self, message: dict[str, Any]) -> None:
        if self.send is not None:
            await self.send(message)
        if message["type"] == "http.response.start":
            self.status = message["status"]
            kind = next((v for k, v in message.get("headers", ()) if k.lower() == b"content-type"), b"")
            self.stream = kind.startswith(b"text/event-stream")
        elif message["type"] == "http.response.body":
            if len(self.body) <= MAX_BYTES:
                self.body += message.get("body", b"")
            if not message.get("more_body", False):
                self.ended = self.clock()
                self.done.set()

    def answer(self) -> Answer | None:
        """The answer's text, or None: not a 200, too long, cut, or not one plain-text choice."""
        if self.status != 200 or self.ended is None or len(self.body) > MAX_BYTES:
            return None
        entry = self.assembled() if self.stream else entry_from_json(bytes(self.body), self.chat)
        return None if entry is None else Answer(entry.content, self.ended - self.started)

    def assembled(self) -> Entry | None:
        assembler = StreamAssembler(self.chat)
        assembler.add(bytes(self.body))
        return assembler.entry()
