"""The replica's request span: an ASGI middleware, installed only when tracing is on.

It opens `server.request` (the child of the caller's traceparent), makes it the current
trace of the request's context (the generation adds the engine's spans to it), and ends it
with the status and what the request log record learned: id, model, token counts.
"""

from __future__ import annotations

from typing import Any

from kvserve.tracing import Tracer, reset_current, set_current

UNTRACED = frozenset({"/health", "/ready", "/metrics"})  # probes and scrapes: noise in a trace store


class TracingMiddleware:
    def __init__(self, app: Any, tracer: Tracer, record_key: str) -> None:
        self.app = app
        self.tracer = tracer
        self.record_key = record_key  # where the request log middleware keeps its record in scope["state"]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACED:
            await self.app(scope, receive, send)
            return
        trace = self.tracer.request("server.request", scope["headers"],
                                    {"http.request.method": scope["method"], "url.path": scope["path"]})
        status = 0

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = set_current(trace)
        try:
            await self.app(scope, receive, send_and_note)
        except BaseException:
            status = status or 500
            raise
        finally:
            reset_current(token)
            trace.end(status, self.record_fields(scope))

    def record_fields(self, scope: dict[str, Any]) -> dict[str, Any]:
        record = scope.get("state", {}).get(self.record_key)
        if record is None:
            return {}
        return {"kvserve.request_id": record.request_id, "kvserve.model": record.model,
                "kvserve.stream": record.stream, "kvserve.prompt_tokens": record.prompt_tokens,
                "kvserve.completion_tokens": record.completion_tokens, "kvserve.cached_tokens": record.cached_tokens}
