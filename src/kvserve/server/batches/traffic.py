"""Counts the interactive completion requests in flight, so that fewer batch lines run
while clients are being answered (runner.py). Batch lines come through the same app,
marked by a header that carries a token only this process knows; the comparison is
constant-time."""

from __future__ import annotations

import hmac
import math
import secrets
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from kvserve.server.batches.records import ENDPOINTS

MARK_HEADER = "x-kvserve-batch-line"
# clients count as being answered this long after their last request ended: lines started in
# a pause between requests still run when the next one comes (at 1 request/s on the dev box,
# 8 lines let in by such pauses cost interactive TTFT p95 1.3-1.7x)
HOLD_S = 5.0


class InteractiveTraffic:
    """The count, and the mark the batch runner puts on its own requests."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last_end = -math.inf  # time.monotonic() when a request last ended
        self.token = secrets.token_hex(16)

    def busy(self) -> bool:
        """Clients' requests in flight, or one ended less than HOLD_S ago."""
        return self.in_flight > 0 or time.monotonic() - self.last_end < HOLD_S

    def ended(self) -> None:
        self.in_flight -= 1
        self.last_end = time.monotonic()

    def is_batch_line(self, scope: Scope) -> bool:
        given = next((v for k, v in scope["headers"] if k == MARK_HEADER.encode()), b"")
        return hmac.compare_digest(given, self.token.encode())


class CountInteractive:
    """ASGI middleware: `traffic.in_flight` is the completion requests being answered now,
    from their first byte to their last (a stream's included), batch lines left out."""

    def __init__(self, app: ASGIApp, traffic: InteractiveTraffic) -> None:
        self.app, self.traffic = app, traffic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in ENDPOINTS or self.traffic.is_batch_line(scope):
            await self.app(scope, receive, send)
            return
        self.traffic.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.traffic.ended()
