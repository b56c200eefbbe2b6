"""The gateway's ASGI app: OpenAI routes, health, metrics, the admin API and the web console."""

from __future__ import annotations

import json
from typing import Awaitable, Callable

from kvserve.console.files import ConsoleFiles, is_console_path
from kvserve.gateway.admin import AdminAPI
from kvserve.gateway.batches.api import BatchesAPI
from kvserve.gateway.context import Receive, Scope, Send
from kvserve.gateway.openapi import document
from kvserve.gateway.proxy import send_error
from kvserve.gateway.quality.feedback import FeedbackAPI
from kvserve.gateway.routing.versions import VERSION_SEPARATOR
from kvserve.gateway.state import GatewayState
from kvserve.openai_error import OpenAIError


class GatewayApp:
    """Routes by exact (method, path); anything under /admin/ goes to the admin API."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.admin = AdminAPI(state)
        self.console = ConsoleFiles("gateway")
        self.batches = BatchesAPI(state)  # /v1/files and /v1/batches
        self.routes: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            ("POST", "/v1/chat/completions"): self.completions,
            ("POST", "/v1/completions"): self.completions,
            ("GET", "/v1/models"): self.models,
            ("GET", "/health"): self.health,
            ("GET", "/ready"): self.ready,
            ("GET", "/metrics"): self.metrics,
            ("GET", "/openapi.json"): self.openapi,
            ("POST", "/v1/feedback"): FeedbackAPI(lambda: state.backends.keys(state.config), state.backends.store,
                                                  state.backends.quality, lambda: state.config.feedback, state.metrics),
        }
        self.methods: dict[str, list[str]] = {}  # path -> the methods it answers (the Allow header of a 405)
        for method, path in self.routes:
            self.methods.setdefault(path, []).append(method)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        handler = self.routes.get((scope["method"], scope["path"]))
        if handler is not None:
            await handler(scope, receive, send)
        elif scope["path"].startswith("/admin/"):
            await self.admin(scope, receive, send)
        elif is_console_path(scope["path"]):
            await self.console(scope, receive, send)
        elif scope["path"].startswith(("/v1/files", "/v1/batches")):
            await self.batches(scope, receive, send)
        else:
            await send_error(send, self.no_route(scope["method"], scope["path"]))

    def no_route(self, method: str, path: str) -> OpenAIError:
        allowed = self.methods.get(path)
        if allowed is None:
            return OpenAIError(404, f"no route {method} {path}", code="not_found")
        allow = ", ".join(allowed)
        return OpenAIError(405, f"{path} does not answer {method}; use {allow}", code="method_not_allowed",
                           headers={"allow": allow})

    async def completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.state.pipeline(scope, receive, send)

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        data = []
        for name, model in self.state.table.models.items():
            data.append({"id": name, "object": "model", "created": 0, "owned_by": "kvserve"})
            data.extend({"id": f"{name}{VERSION_SEPARATOR}{v}", "object": "model", "created": 0,
                         "owned_by": "kvserve", "parent": name} for v in model.versions)
        await respond(send, 200, json.dumps({"object": "list", "data": data}).encode())

    async def openapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, document(self.state.table, self.state.config))

    async def health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b'{"status":"ok"}')

    async def ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.state.ready():
            await respond(send, 200, b'{"status":"ready"}')
        else:
            await respond(send, 503, b'{"status":"not ready"}')

    async def metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        table, link = self.state.table, self.state.backends.link
        in_flight = {e.url: e.in_flight for e in table.endpoints()}
        weights = {(m.name, v.name): v.weight for m in table.models.values() for v in m.versions.values()}
        page = self.state.metrics.render(in_flight, weights, None if link is None else not link.down)
        await respond(send, 200, page, b"text/plain; version=0.0.4")

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.state.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.state.close()
                await self.batches.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def respond(send: Send, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})
