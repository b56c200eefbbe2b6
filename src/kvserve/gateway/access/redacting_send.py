"""The ASGI `send` that redacts answers on their way to the client (see access/redaction.py).

It wraps the client's `send` for the whole request, so every way an answer leaves is
covered: relayed from an upstream, replayed from the caches, an Idempotency-Key answer or
a resumed stream. A JSON answer is redacted whole (its choices' `message.content` or
`text`); an SSE stream event by event, each choice's text through its own TextRedactor,
with every event kept (so `id:` numbers and counts are unchanged, a held piece becomes an
empty one) and what is still held sent with the event that finishes the choice. Error
answers and tool-call arguments pass unchanged.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from kvserve.gateway.access.redaction import TextRedactor, redact_text

Send = Callable[[dict[str, Any]], Awaitable[None]]
EVENT_END = b"\n\n"
MAX_JSON = 8 << 20  # a larger JSON answer is refused rather than sent unredacted


class RedactingSend:
    def __init__(self, send: Send, kinds: frozenset[str], max_hold_chars: int, found: Callable[[str], None]) -> None:
        self.send = send
        self.kinds = kinds
        self.max_hold = max_hold_chars
        self.found = found
        self.mode = "pass"  # "sse", "json" or "pass" (errors and anything else)
        self.pending = b""  # an SSE event split across chunks, or the JSON body so far
        self.choices: dict[int, TextRedactor] = {}
        self.chat = True

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.mode = response_mode(message)
            await self.send(message)
            return
        if message["type"] != "http.response.body" or self.mode == "pass":
            await self.send(message)
            return
        body, more = message.get("body", b""), message.get("more_body", False)
        out = self.events(body, more) if self.mode == "sse" else self.whole(body, more)
        if out or not more:
            await self.send({"type": "http.response.body", "body": out, "more_body": more})

    def whole(self, body: bytes, more: bool) -> bytes:
        self.pending += body
        if more:
            if len(self.pending) > MAX_JSON:
                raise ValueError("answer too large to redact")
            return b""
        data, self.pending = self.pending, b""
        try:
            answer = json.loads(data)
        except ValueError:
            return redact_text(data.decode("utf-8", "replace"), self.kinds, self.found).encode()
        for choice in answer.get("choices") or [] if isinstance(answer, dict) else []:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                message["content"] = redact_text(message["content"], self.kinds, self.found)
            elif isinstance(choice, dict) and isinstance(choice.get("text"), str):
                choice["text"] = redact_text(choice["text"], self.kinds, self.found)
        return json.dumps(answer).encode()

    def events(self, body: bytes, more: bool) -> bytes:
        data = self.pending + body
        *events, self.pending = data.split(EVENT_END)
        if not more and self.pending:
            events.append(self.pending)
            self.pending = b""
        out = [self.event(event) + EVENT_END for event in events if event]
        if not more:
            out.append(self.leftover())
        return b"".join(out)

    def event(self, event: bytes) -> bytes:
        lines = event.split(b"\n")
        for i, line in enumerate(lines):
            if line.startswith(b"data:") and line[5:].strip() not in (b"", b"[DONE]"):
                lines[i] = self.chunk(line)
        return b"\n".join(lines)

    def chunk(self, line: bytes) -> bytes:
        try:
            chunk = json.loads(line[5:])
        except ValueError:
            return line
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not isinstance(choices, list) or not choices:
            return line
        for choice in choices:
            if isinstance(choice, dict):
                self.choice(choice)
        return b"data: " + json.dumps(chunk).encode()

    def choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        self.chat = isinstance(delta, dict)
        holder, field = (delta, "content") if isinstance(delta, dict) else (choice, "text")
        redactor = self.choices.get(choice.get("index", 0))
        if redactor is None:
            redactor = self.choices[choice.get("index", 0)] = TextRedactor(self.kinds, self.max_hold, self.found)
        piece = holder.get(field)
        text = redactor.feed(piece) if isinstance(piece, str) else ""
        if choice.get("finish_reason"):
            text += redactor.flush()
        if isinstance(piece, str) or text:
            holder[field] = text

    def leftover(self) -> bytes:
        """Text still held when a stream ended without finishing its choices (it broke)."""
        rest = {index: r.flush() for index, r in self.choices.items()}
        choices = [{"index": i, "delta": {"content": t}} if self.chat else {"index": i, "text": t}
                   for i, t in rest.items() if t]
        return b"data: " + json.dumps({"choices": choices}).encode() + EVENT_END if choices else b""


def response_mode(start: dict[str, Any]) -> str:
    if start.get("status") != 200:
        return "pass"
    kind = next((v for k, v in start.get("headers", ()) if k.lower() == b"content-type"), b"")
    if kind.startswith(b"text/event-stream"):
        return "sse"
    return "json" if kind.startswith(b"application/json") else "pass"
