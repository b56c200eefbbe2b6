"""Optional API key for a server exposed without a gateway (constant-time comparison)."""

from __future__ import annotations

import hmac

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from kvserve.openai_error import OpenAIError
from kvserve.server.errors import json_response

# paths that need the key; probes, /metrics and /version stay open for orchestrators
PROTECTED_PREFIXES = ("/v1/", "/tokenize", "/detokenize")


class ApiKeyMiddleware:
    """Rejects protected requests whose `Authorization: Bearer <key>` is not the key (401)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._expected = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED_PREFIXES) and not self._allowed(scope):
            error = OpenAIError(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key",
                                headers={"WWW-Authenticate": "Bearer"})
            response: JSONResponse = json_response(error)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        scheme, _, token = given.partition(b" ")
        # the scheme is case-insensitive (RFC 7235) and no secret; the key is compared in constant time
        scheme_ok = scheme.lower() == b"bearer"
        return hmac.compare_digest(token.lstrip(b" "), self._expected) and scheme_ok
