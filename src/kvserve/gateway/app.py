"""The gateway's ASGI app: OpenAI routes, health, metrics and the admin API."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable

from kvserve.gateway import pii
from kvserve.gateway.admin import AdminAPI
from kvserve.gateway.proxy import Outcome, send_error
from kvserve.gateway.request import ClientRequest
from kvserve.gateway.responses import Ticket
from kvserve.gateway.state import GatewayState
from kvserve.gateway.versions import VERSION_SEPARATOR, VersionRoute, choose_version
from kvserve.openai_error import OpenAIError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

log = logging.getLogger("kvserve.gateway")
access_log = logging.getLogger("kvserve.gateway.access")
CLIENT_CLOSED = 499  # nginx's status for "the client went away"


class GatewayApp:
    """Routes by exact (method, path); anything under /admin/ goes to the admin API."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.admin = AdminAPI(state)
        self.routes: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            ("POST", "/v1/chat/completions"): self.completions,
            ("POST", "/v1/completions"): self.completions,
            ("GET", "/v1/models"): self.models,
            ("GET", "/health"): self.health,
            ("GET", "/ready"): self.ready,
            ("GET", "/metrics"): self.metrics,
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
        """The request path: parse, (access control), pick a version, shed, forward, record."""
        state = self.state
        started = state.clock()
        request: ClientRequest | None = None
        version: VersionRoute | None = None
        ticket: Ticket | None = None
        outcome = Outcome()
        watch: DisconnectWatch | None = None
        try:
            body = await read_body(receive, state.config.server.max_body_bytes)
            request = state.parser.parse(scope["path"], scope["headers"], body)
            if state.access is not None:
                ticket = await state.access.identify(request, scope["headers"])
                if await state.access.replay_stored(ticket, request, send):
                    outcome.status = ticket.status
                    return
                state.access.check(ticket, request)
            model = state.table.model(request.model)
            version = choose_version(model, request.pinned_version, request.route.session_key, state.rng)
            state.shed_check(request, version)
            upstream_send = send
            if ticket is not None and state.access is not None:
                upstream_send = await self.admit(ticket, request, version, send)
                if upstream_send is None:
                    outcome.status = ticket.status
                    return
            watch = DisconnectWatch(receive, ticket.tap.leave if ticket and ticket.recorder else None)
            outcome = await state.proxy.forward(request, version, upstream_send, started)
        except OpenAIError as error:
            outcome.status = error.status
            outcome.error = error.code
            await send_error(send, error)
        except asyncio.CancelledError:
            if watch is None or not watch.client_left:
                raise
            watch.uncancel()
            outcome.status, outcome.error = CLIENT_CLOSED, "client_disconnected"
        except Exception:  # a bug: answer in OpenAI's shape if nothing was sent yet, and log it
            log.exception("request failed")
            if outcome.status == 0:
                outcome.status = 500
                await send_error(send, OpenAIError(500, "internal gateway error", "server_error", code="internal_error"))
        finally:
            if watch is not None:
                watch.stop()
            if ticket is not None and state.access is not None:
                state.access.finish(ticket, outcome.status)
            self.record(request, version, outcome, started, ticket)

    async def admit(self, ticket: Ticket, request: ClientRequest, version: VersionRoute,
                    send: Send) -> Send | None:
        """Limits, then the cache; the send the proxy should write to, or None when answered."""
        access = self.state.access
        assert access is not None
        await access.admit(ticket, request, version)
        if await access.serve_cached(ticket, request, version, send):
            return None
        return access.tap(ticket, request, send)

    def record(self, request: ClientRequest | None, version: VersionRoute | None, outcome: Outcome,
               started: float, ticket: Ticket | None = None) -> None:
        duration = self.state.clock() - started
        model, vname = (version.model, version.name) if version is not None else ("unknown", "none")
        self.state.metrics.request_done(model, vname, outcome.endpoint, outcome.status, duration, outcome.ttft)
        if not self.state.config.server.log_requests or not access_log.isEnabledFor(logging.INFO):
            return
        line = {  # never the prompt or the answer
            "request_id": request.request_id if request else None, "model": model, "version": vname,
            "endpoint": outcome.endpoint, "status": outcome.status, "attempts": outcome.attempts,
            "stream": request.stream if request else None, "priority": request.priority if request else None,
            "ttft_ms": None if outcome.ttft is None else round(outcome.ttft * 1000, 2),
            "duration_ms": round(duration * 1000, 2), "error": outcome.error,
        }
        if ticket is not None:  # the key's public id, never the key
            line.update(tenant=ticket.tenant, key_id=ticket.key_id, cache=ticket.cached is not None)
            if self.state.config.privacy.log_prompts and request is not None:
                line["prompt"] = pii.redact(request.route.prompt)
        access_log.info(json.dumps(line))

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        data = []
        for name, model in self.state.table.models.items():
            data.append({"id": name, "object": "model", "created": 0, "owned_by": "kvserve"})
            data.extend({"id": f"{name}{VERSION_SEPARATOR}{v}", "object": "model", "created": 0,
                         "owned_by": "kvserve", "parent": name} for v in model.versions)
        await respond(send, 200, json.dumps({"object": "list", "data": data}).encode())

    async def health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b'{"status":"ok"}')

    async def ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.state.ready():
            await respond(send, 200, b'{"status":"ready"}')
        else:
            await respond(send, 503, b'{"status":"not ready"}')

    async def metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        in_flight = {e.url: e.in_flight for e in self.state.table.endpoints()}
        await respond(send, 200, self.state.metrics.render(in_flight), b"text/plain; version=0.0.4")

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.state.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.state.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


class DisconnectWatch:
    """Cancels the current task if the client disconnects before the answer is done, so
    that the upstream request is dropped too (the engine then aborts it). With `on_leave`
    (resumable streams) it calls that instead and the answer runs to its end."""

    def __init__(self, receive: Receive, on_leave: Callable[[], None] | None = None) -> None:
        self.on_leave = on_leave
        self.task = asyncio.current_task()
        self.client_left = False
        self.stopped = False
        self.listener = asyncio.ensure_future(receive())
        self.listener.add_done_callback(self._on_message)

    def _on_message(self, listener: asyncio.Future[Any]) -> None:
        # after the answer is complete receive() also returns; stop() has run by then
        if self.stopped or listener.cancelled() or self.task is None:
            return
        self.client_left = True
        if self.on_leave is not None:
            self.on_leave()
        else:
            self.task.cancel()

    def uncancel(self) -> None:
        if self.task is not None and hasattr(self.task, "uncancel"):
            self.task.uncancel()

    def stop(self) -> None:
        self.stopped = True
        if not self.listener.done():
            self.listener.cancel()


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise OpenAIError(CLIENT_CLOSED, "client went away", code="client_disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise OpenAIError(413, f"request body over {limit} bytes", code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(send: Send, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})
