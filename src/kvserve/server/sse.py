"""Server-sent events as the OpenAI API streams them: `data: <json>` blocks, then `data: [DONE]`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering


def event(payload: str) -> bytes:
    return b"data: " + payload.encode() + b"\n\n"


def error_event(body: dict) -> bytes:
    """An error after the 200 went out: OpenAI clients raise on a `data: {"error": ...}` event."""
    return event(json.dumps(body))


def sse_response(events: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={**HEADERS, **(headers or {})})
