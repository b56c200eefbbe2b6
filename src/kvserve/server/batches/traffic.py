"""Counts the interactive completion requests in flight, so that fewer batch lines run
while clients are being answered (runner.py). Batch lines come through the same app,
marked by a header that carries a token only this process knows; the comparison is
constant-time."""

from __future__ import annotations

import hmac
import secrets

from starlette.types import ASGIApp, Receive, Scope, Send

from kvserve.server.batches.records import ENDPOINTS

MARK_HEADER = "x-kvserve-batch-line"


class InteractiveTraffic:
    """The count, and the mark the batch runner puts on its own requests."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.token = secrets.token_hex(16)

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
            self.traffic.in_flight -= 1
