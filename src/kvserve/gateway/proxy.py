"""Forwarding: pick an endpoint, send the request, stream the answer back chunk by chunk.

An attempt is committed when its first body byte is relayed to the client; before that
it may fail over to another endpoint (connect errors, timeouts, retryable statuses),
after that it never is. Response headers are held back until the first body byte, so
an upstream that answers headers and then stalls can still be retried.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from kvserve.gateway import retry
from kvserve.gateway.config import GatewayConfig
from kvserve.gateway.errors import no_endpoint, upstream_timeout
from kvserve.gateway.fleet.endpoints import Endpoint
from kvserve.gateway.fleet.upstream import Response, UpstreamClient, within
from kvserve.gateway.metrics import GatewayMetrics
from kvserve.gateway.outcome import Outcome
from kvserve.gateway.renamer import ModelRenamer
from kvserve.gateway.request import ClientRequest
from kvserve.gateway.retry import RetryPolicy
from kvserve.gateway.routing.versions import VersionRoute
from kvserve.openai_error import OpenAIError

Send = Callable[[dict[str, Any]], Awaitable[None]]

# not copied from the upstream's answer: connection-level, recomputed, or set by the gateway
DROPPED_HEADERS = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"date",
                             b"server", b"proxy-connection", b"te", b"trailer", b"upgrade", b"x-request-id"})
SSE_TYPE = b"text/event-stream"
EVENT_END = b"\n\n"


@dataclass
class Failure:
    """An attempt that failed before any byte reached the client."""

    reason: str  # retry.CONNECT | retry.TIMEOUT | retry.STATUS
    status: int = 0  # upstream status (reason STATUS)
    body: bytes = b""  # upstream error body (reason STATUS)
    content_type: bytes = b"application/json"


class AttemptFailed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


class Proxy:
    """Sends requests upstream over pooled keep-alive connections, with retries."""

    def __init__(self, client: UpstreamClient, config: GatewayConfig, metrics: GatewayMetrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.metrics = metrics
        self.clock = clock
        self.configure(config)

    def configure(self, config: GatewayConfig) -> None:
        t = config.timeouts
        self.first_byte_s = t.first_byte_s
        self.retry = RetryPolicy(config.retry)
        self.deadline_s = config.retry.deadline_s
        self.stale_after_s = config.scrape.interval_s * config.scrape.stale_after
        self.forward_priority = config.priority.forward_in_body
        self.priority_header = config.priority.header.lower()
        self.client.connect_timeout = t.connect_s
        self.client.pacer.max_interval_s = config.streams.coalesce_ms / 1000
        # streams may be silent for idle_s; a plain answer comes whole after generation
        self.stream_read_timeout = t.idle_s
        self.plain_read_timeout = max(t.idle_s, t.first_byte_s)

    def pick(self, request: ClientRequest, version: VersionRoute, tried: set[str]) -> Endpoint | None:
        now = self.clock()
        for pool in version.pools_for(request.route.est_prompt_tokens):
            endpoint = pool.pick(request.route, now, self.stale_after_s, tried)
            if endpoint is not None:
                self.metrics.route_decided(version.model, version.name, pool.policy_name, endpoint.url)
                return endpoint
        return None

    async def forward(self, request: ClientRequest, version: VersionRoute, send: Send, started: float) -> Outcome:
        """Answer the client from some endpoint, retrying before the first byte."""
        outcome = Outcome(forwarded=True)
        self.metrics.upstream_called(version.model, version.name, self.clock() - started)
        deadline = started + self.deadline_s
        tried: set[str] = set()
        failure: Failure | None = None
        while (endpoint := self.pick(request, version, tried)) is not None:
            tried.add(endpoint.url)
            outcome.attempts += 1
            outcome.endpoint = endpoint.url
            failure = await self.attempt(endpoint, request, version, send, started, deadline, outcome)
            now = self.clock()
            if failure is None or not self.retry.may_retry(outcome.attempts, now, deadline):
                break
            self.metrics.retries.labels(version.model, version.name, failure.reason).inc()
            await asyncio.sleep(min(self.retry.backoff(outcome.attempts), max(0.0, deadline - now)))
        if failure is not None or outcome.attempts == 0:
            await self.refuse(send, failure, version, outcome)
        return outcome

    async def attempt(self, endpoint: Endpoint, request: ClientRequest, version: VersionRoute, send: Send,
                      started: float, deadline: float, outcome: Outcome) -> Failure | None:
        """One try on one endpoint; None when it was committed (relayed to the client)."""
        trial = endpoint.breaker.on_dispatch()
        endpoint.in_flight += 1
        verdict: bool | None = None  # breaker verdict: True success, False failure, None no verdict
        try:
            try:
                response, first = await self.open(endpoint, request, version, deadline)
            except AttemptFailed as exc:
                verdict = False
                outcome.error = exc.failure.reason
                return exc.failure
            clean = False
            try:
                outcome.status = response.status
                outcome.ttft = self.clock() - started
                endpoint.answers += 1
                await send({"type": "http.response.start", "status": response.status,
                            "headers": client_headers(response, request, version)})
                outcome.error = await relay(response, first, send, renamer(request, version), outcome)
                clean = outcome.error is None
                verdict = clean and response.status < 500
                if verdict:
                    endpoint.answers += 1
            finally:
                if clean:
                    response.release()  # back to the pool
                else:
                    response.close()  # the upstream sees the disconnect and aborts the request
            return None
        finally:
            endpoint.in_flight -= 1
            if verdict is None:
                endpoint.breaker.abandon(trial)
            else:
                endpoint.breaker.record(verdict, self.clock(), trial)

    async def open(self, endpoint: Endpoint, request: ClientRequest, version: VersionRoute,
                   deadline: float) -> tuple[Response, bytes]:
        """Send the request and wait for the first body byte (or raise AttemptFailed)."""
        headers = self.upstream_headers(endpoint, request)
        body = request.upstream_body(version, self.forward_priority)
        read_timeout = self.stream_read_timeout if request.stream else self.plain_read_timeout
        budget = max(0.0, min(self.first_byte_s, deadline - self.clock()))
        holder: list[Response] = []

        async def first_byte() -> tuple[Response, bytes]:
            response = await self.client.request(endpoint.origin, "POST", endpoint.base_path + request.path,
                                                 headers, body, read_timeout)
            holder.append(response)
            if self.retry.retryable_status(response.status):
                kind = response.header(b"content-type") or b"application/json"
                raise AttemptFailed(Failure(retry.STATUS, response.status, await response.read_all(), kind))
            return response, await response.read()

        try:
            return await within(budget, first_byte())
        except AttemptFailed:
            _close(holder)
            raise
        except TimeoutError:
            _close(holder)
            raise AttemptFailed(Failure(retry.TIMEOUT)) from None
        except (OSError, ValueError):  # refused, reset, closed early, bad HTTP
            _close(holder)
            raise AttemptFailed(Failure(retry.CONNECT)) from None
        except BaseException:  # cancelled (the client left): drop the upstream request
            _close(holder)
            raise

    def upstream_headers(self, endpoint: Endpoint, request: ClientRequest) -> dict[str, str]:
        headers = {"content-type": "application/json", "x-request-id": request.request_id,
                   self.priority_header: str(request.priority)}
        headers.update(request.trace)
        if endpoint.config.api_key:
            headers["authorization"] = f"Bearer {endpoint.config.api_key}"
        return headers

    async def refuse(self, send: Send, failure: Failure | None, version: VersionRoute, outcome: Outcome) -> None:
        """Answer a request that no attempt committed."""
        if failure is not None and failure.reason == retry.STATUS:
            outcome.status = failure.status
            await send({"type": "http.response.start", "status": failure.status,
                        "headers": [(b"content-type", failure.content_type)]})
            await send({"type": "http.response.body", "body": failure.body})
            return
        error = upstream_timeout() if failure is not None and failure.reason == retry.TIMEOUT else \
            no_endpoint(version.model, version.name)
        outcome.status = error.status
        await send_error(send, error)


def renamer(request: ClientRequest, version: VersionRoute) -> ModelRenamer | None:
    asked = request.payload["model"]
    return None if asked == version.upstream_model else ModelRenamer(version.upstream_model, asked)


async def relay(response: Response, first: bytes, send: Send, rename: ModelRenamer | None = None,
                outcome: Outcome | None = None) -> str | None:
    """Pass the answer through as it arrives; returns why it broke, or None. SSE events
    (blank-line ends: JSON escapes newlines in strings) are counted in `outcome.events`."""
    counted = outcome if outcome is not None else Outcome()
    counted.events += first.count(EVENT_END)
    if response.drained():  # the whole answer came in one piece
        body = first if rename is None else rename(first, True)
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return None
    await send({"type": "http.response.body", "body": first if rename is None else rename(first, False),
                "more_body": True})
    read = response.read
    try:
        while chunk := await read():
            counted.events += chunk.count(EVENT_END)
            last = response.drained()  # end the response with the last bytes: one write less
            if rename is not None:
                chunk = rename(chunk, last)
            await send({"type": "http.response.body", "body": chunk, "more_body": not last})
            if last:
                return None
    except (OSError, TimeoutError) as exc:
        tail = b""
        if (response.header(b"content-type") or b"").startswith(SSE_TYPE):
            error = OpenAIError(502, "upstream stream broke", "server_error", code="upstream_error")
            tail = b"\n\ndata: " + error.body_bytes() + b"\n\n"
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        return type(exc).__name__
    await send({"type": "http.response.body", "body": b"" if rename is None else rename(b"", True),
                "more_body": False})
    return None


def client_headers(response: Response, request: ClientRequest,
                   version: VersionRoute) -> list[tuple[bytes, bytes]]:
    headers = [(k, v) for k, v in response.headers if k.lower() not in DROPPED_HEADERS]
    headers.append((b"x-request-id", request.request_id.encode("latin-1")))
    headers.append((b"x-model-version", version.name.encode("latin-1")))
    return headers


async def send_error(send: Send, error: OpenAIError) -> None:
    headers = [(b"content-type", b"application/json"), *((k.encode(), v.encode()) for k, v in error.headers.items())]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": error.body_bytes()})


def _close(holder: list[Response]) -> None:
    for response in holder:
        response.close()
