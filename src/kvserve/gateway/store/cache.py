"""The exact response cache: which requests qualify, their keys, and the entry format.

Only deterministic requests (temperature 0, or a fixed seed) with one choice are cached.
The key hashes the tenant, model, version, route and the request without the fields
that do not change the answer (stream, stream_options, user, priority), so tenants
never share entries. An entry keeps the answer's text, finish reason and usage, and
can be replayed as JSON or as an SSE stream, whichever the new request asked for.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from kvserve.gateway.store.chunk_frame import scan

IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "priority", "model"})


def deterministic(payload: dict[str, Any]) -> bool:
    n = payload.get("n")
    if n not in (None, 1):
        return False
    seed = payload.get("seed")
    return payload.get("temperature") == 0 or (isinstance(seed, int) and not isinstance(seed, bool))


def cache_key(tenant: str, model: str, version: str, path: str, payload: dict[str, Any]) -> str:
    kept = {k: v for k, v in payload.items() if k not in IGNORED_FIELDS}
    normal = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256("\0".join((tenant, model, version, path, normal)).encode()).hexdigest()
    return f"cache:{digest}"


@dataclass
class Entry:
    """One cached answer (a single choice of plain text)."""

    chat: bool
    id: str
    model: str
    content: str
    finish_reason: str | None
    usage: dict[str, int] | None
    seconds: float = 0.0  # how long the upstream took to answer (time a hit saves)

    def dumps(self) -> bytes:
        # the fields by hand: `asdict` deep-copies them first, 4x the time for the same bytes
        return json.dumps({"chat": self.chat, "id": self.id, "model": self.model, "content": self.content,
                           "finish_reason": self.finish_reason, "usage": self.usage,
                           "seconds": self.seconds}).encode()

    @classmethod
    def loads(cls, raw: bytes) -> Entry:
        return cls(**json.loads(raw))

    def as_json(self) -> bytes:
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": self.content},
                                      "logprobs": None, "finish_reason": self.finish_reason}
        else:
            choice = {"index": 0, "text": self.content, "logprobs": None, "finish_reason": self.finish_reason}
        return json.dumps({"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                           "created": int(time.time()), "model": self.model, "choices": [choice],
                           "usage": self.usage}).encode()

    def as_sse(self, include_usage: bool) -> bytes:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            body = {"id": self.id, "object": obj, "created": created, "model": self.model, "choices": choices,
                    **extra}
            return b"data: " + json.dumps(body).encode() + b"\n\n"

        if self.chat:
            first = {"index": 0, "delta": {"role": "assistant", "content": self.content}, "finish_reason": None}
            last = {"index": 0, "delta": {}, "finish_reason": self.finish_reason}
        else:
            first = {"index": 0, "text": self.content, "finish_reason": None}
            last = {"index": 0, "text": "", "finish_reason": self.finish_reason}
        out = chunk([first]) + chunk([last])
        if include_usage and self.usage is not None:
            out += chunk([], usage=self.usage)
        return out + b"data: [DONE]\n\n"


def entry_from_json(body: bytes, chat: bool) -> Entry | None:
    """An entry from a complete JSON answer, or None if it cannot be replayed faithfully."""
    try:
        data = json.loads(body)
        choices = data["choices"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(choices, list) or len(choices) != 1:
        return None
    choice = choices[0]
    if chat:
        message = choice.get("message") or {}
        if set(message) - {"role", "content", "refusal", "tool_calls", "reasoning_content"} or message.get(
                "tool_calls") or message.get("reasoning_content") or not isinstance(message.get("content"), str):
            return None
        text = message["content"]
    else:
        text = choice.get("text")
        if not isinstance(text, str):
            return None
    return Entry(chat, str(data.get("id", "")), str(data.get("model", "")), text, choice.get("finish_reason"),
                 data.get("usage"))


DATA_LINE = re.compile(rb"^data:[ ]?([^\r\n]*)", re.MULTILINE)
MAX_STREAM_BYTES = 8 << 20  # a longer stream is relayed but not assembled


class StreamAssembler:
    """Rebuilds an entry from a stream. `add` keeps the raw SSE bytes as they pass (one
    append per chunk, nothing parsed on the answer's path); `entry` reads them all at
    once, when the answer is stored: most chunks by their frame (see `chunk_frame`), the
    rest parsed whole, the same entry either way."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.raw: list[bytes] = []
        self.size = 0
        self.parts: list[str] = []
        self.id = self.model = ""
        self.finish_reason: str | None = None
        self.usage: dict[str, int] | None = None
        self.replayable = True

    def add(self, events: bytes) -> None:
        """Whole SSE events (each ended by a blank line)."""
        self.size += len(events)
        if self.size > MAX_STREAM_BYTES:
            self.replayable, self.raw = False, []
        elif self.replayable:
            self.raw.append(events)

    def feed(self, chunk: dict[str, Any]) -> None:
        """One parsed `data:` payload."""
        self.id = self.id or str(chunk.get("id", ""))
        self.model = self.model or str(chunk.get("model", ""))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                self.replayable = False
                continue
            delta = (choice.get("delta") or {}) if self.chat else {"content": choice.get("text")}
            if delta.get("tool_calls") or delta.get("reasoning_content"):
                self.replayable = False
            if isinstance(delta.get("content"), str):
                self.parts.append(delta["content"])
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def entry(self) -> Entry | None:
        if self.raw:
            stream = b"".join(self.raw)
            self.raw = []
            self.read(stream)
        if not self.replayable or self.finish_reason is None:
            return None
        return Entry(self.chat, self.id, self.model, "".join(self.parts), self.finish_reason, self.usage)

    def read(self, stream: bytes) -> None:
        """Feed a whole stream: framed texts in between the chunks parsed whole, in order."""
        scanned = scan(stream, self.chat)
        if scanned is None:
            self.read_slowly(stream)
            return
        texts, done = scanned.texts, 0
        for before, chunk in scanned.chunks:
            self.parts += texts[done:before]
            done = before
            if isinstance(chunk, dict):
                self.feed(chunk)
        self.parts += texts[done:]

    def read_slowly(self, stream: bytes) -> None:
        """Every payload parsed (streams `scan` declines: carriage returns, odd payloads)."""
        chunks = parse_payloads(stream)
        if chunks is None:
            self.replayable = False
        for chunk in chunks or []:
            if isinstance(chunk, dict):
                self.feed(chunk)


def parse_payloads(stream: bytes) -> list[Any] | None:
    """The JSON `data:` payloads of an SSE stream, parsed in one call (None if one is not JSON)."""
    payloads = [p for p in DATA_LINE.findall(stream) if p and p != b"[DONE]"]
    try:
        return json.loads(b"[" + b",".join(payloads) + b"]")
    except ValueError:
        return None
