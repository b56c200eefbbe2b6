"""Reading a request body: bounded in size, then validated by a protocol model."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel
from starlette.requests import Request

from kvserve.openai_error import OpenAIError
from kvserve.server.errors import parse_body

MAX_BODY_BYTES = 32 * 1024 * 1024  # far above any context's worth of text or token ids

Model = TypeVar("Model", bound=BaseModel)


async def read_body(request: Request, model: type[Model]) -> Model:
    """The validated body; 413 past MAX_BODY_BYTES (counted as it arrives), 400 if invalid."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return parse_body(model, b"".join(chunks))


def _too_large() -> OpenAIError:
    return OpenAIError(413, f"The request body is larger than {MAX_BODY_BYTES} bytes.", "invalid_request_error",
                    code="request_too_large")
