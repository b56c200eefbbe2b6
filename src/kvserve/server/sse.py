"""Server-sent events as the OpenAI API streams them: `data: <json>` blocks, then `data: [DONE]`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering


def event(payload: str) -> bytes:
    return b"data: " + payload.encode() + b"\n\n"


class ChunkEncoder:
    """Stream chunks as JSON without building response models, for the common chunk (one
    choice, no logprobs, no usage): the envelope (`id`, `object`, `created`, `model`) is
    encoded once per request; each chunk adds its choice. Byte for byte what the pydantic
    models give (tests/server/test_protocol.py compares them); saves their validation and
    serialization on every chunk of every stream."""

    def __init__(self, obj: str, request_id: str, created: int, model: str, trailer: str) -> None:
        head = dumps({"id": request_id, "object": obj, "created": created, "model": model})
        self._head = head[:-1] + ',"choices":['
        self._tail = "]" + trailer + "}"  # the fields after `choices`, e.g. ',"usage":null'

    def event(self, choice: dict) -> bytes:
        return event(self._head + dumps(choice) + self._tail)


def dumps(value: object) -> str:
    """Compact JSON, as pydantic writes it (non-ASCII kept)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def error_event(body: dict) -> bytes:
    """An error after the 200 went out: OpenAI clients raise on a `data: {"error": ...}` event."""
    return event(json.dumps(body))


def sse_response(events: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={**HEADERS, **(headers or {})})
