"""What every handler needs: the served models, settings, metrics; and the version a request holds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from kvserve.server.metrics import ServerMetrics
from kvserve.server.model_host import ModelHost
from kvserve.server.model_lease import hold
from kvserve.server.model_version import ModelVersion
from kvserve.server.request_log import STATE_KEY, RequestLogRecord
from kvserve.server.settings import ServerSettings


@dataclass
class ServerState:
    models: ModelHost
    settings: ServerSettings
    metrics: ServerMetrics
    started: int = field(default_factory=lambda: int(time.time()))

    async def model_for(self, request: Request, name: str | None) -> ModelVersion:
        """The version that answers this request for `name` (None: the default model),
        held until the response is sent (404 unknown, 503 + Retry-After cannot load)."""
        version = await self.models.acquire(name)
        hold(request.scope, version, self.models.release)
        return version

    def timeout_for(self, requested: float | None) -> float | None:
        return requested if requested is not None else self.settings.request_timeout


def _single_token(tokenizer: Any, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def server_state(request: Request) -> ServerState:
    return request.app.state.kvserve


def request_log(request: Request) -> RequestLogRecord:
    """The record the logging middleware made for this request (a throwaway one without it)."""
    record = request.scope.get("state", {}).get(STATE_KEY)
    if record is None:
        record = RequestLogRecord(request.method, request.url.path)
        request.scope.setdefault("state", {})[STATE_KEY] = record
    return record
