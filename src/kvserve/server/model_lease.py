"""A request holds the model version that answers it until its response is sent: the
version is named in the `x-kvserve-model-version` header, and a hot swap frees an old
version only once nobody holds it (server/model_host.py)."""

from __future__ import annotations

from typing import Callable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvserve.server.model_version import ModelVersion

LEASE_KEY = "kvserve.model_lease"
VERSION_HEADER = "x-kvserve-model-version"


def hold(scope: Scope, version: ModelVersion, release: Callable[[ModelVersion], None]) -> None:
    """Mark `version` held by this request (released by ModelLeaseMiddleware)."""
    held = scope.setdefault("state", {}).setdefault(LEASE_KEY, [])
    held.append((version, release))


class ModelLeaseMiddleware:
    """Adds the version header to the response and releases the request's versions once the
    app is done with it: for a stream, after its last chunk (StreamingResponse returns then)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            held = scope.get("state", {}).get(LEASE_KEY)
            if message["type"] == "http.response.start" and held:
                MutableHeaders(scope=message)[VERSION_HEADER] = held[-1][0].label
            await send(message)

        try:
            await self.app(scope, receive, send_with_version)
        finally:
            for version, release in scope.get("state", {}).pop(LEASE_KEY, []):
                release(version)
