"""The one error type of the OpenAI API, shared by the server and the gateway.

Every failure either of them answers itself has the body
`{"error": {"message", "type", "param", "code"}}`; this module imports nothing of
kvserve, so any layer may raise it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class OpenAIError(Exception):
    """An error answered with an HTTP status and OpenAI's error body."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()
