"""One structured (JSON) log line per HTTP request, written when its response has ended.

`RequestLogMiddleware` creates a `RequestLogRecord` for each request and puts it in the
request state; handlers fill in what they know (id, model, token counts, timings). The
prompt and completion text go in only with `--log-requests`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("kvserve.requests")

# where handlers find the record: request.state.request_log
STATE_KEY = "request_log"


_LINE_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"}


@dataclass
class RequestLogRecord:
    method: str
    path: str
    arrival: float = field(default_factory=time.monotonic)
    request_id: str | None = None
    client_request_id: str | None = None  # the client's X-Request-Id header, for correlation
    model: str | None = None
    stream: bool | None = None
    status: int | None = None  # HTTP status sent (None: the client left before any)
    outcome: str | None = None  # ok | error | timeout | client_disconnected | engine_dead
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    finish_reasons: list[str] | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    spec_draft_tokens: int | None = None  # speculative decoding: tokens proposed ...
    spec_accepted_tokens: int | None = None  # ... and accepted
    prompt: Any = None  # only with --log-requests
    completion: list[str] | None = None  # only with --log-requests

    def line(self) -> str:
        """One JSON object on one line, whatever the path or text holds."""
        values = {k: v for k, v in asdict(self).items() if v is not None and k != "arrival"}
        text = json.dumps({"event": "request", **values}, ensure_ascii=False, default=str)
        # JSON leaves these raw, but log readers (str.splitlines, journald) break lines at them
        return text.translate(_LINE_BREAKS)


class RequestLogMiddleware:
    """Times every HTTP request and logs its record once the response is done."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestLogRecord(scope["method"], scope["path"])
        record.client_request_id = _header(scope, b"x-request-id")
        scope.setdefault("state", {})[STATE_KEY] = record

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except BaseException:
            record.status = record.status or 500
            raise
        finally:
            record.e2e_s = round(time.monotonic() - record.arrival, 6)
            if not _quiet(record):
                logger.info(record.line())


def _header(scope: Scope, name: bytes) -> str | None:
    value = next((v for k, v in scope["headers"] if k == name), None)
    return value.decode("latin-1")[:200] if value is not None else None


def _quiet(record: RequestLogRecord) -> bool:
    """Probes and scrapes that succeed are not worth a line each."""
    return record.path in ("/health", "/ready", "/metrics") and record.status == 200


def configure_request_logger() -> None:
    """Request lines go to stderr as bare JSON (no prefix), one per line."""
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
