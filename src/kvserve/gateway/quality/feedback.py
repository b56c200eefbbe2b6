"""Feedback: clients score answers (`POST /v1/feedback`), kept per model version.

The remember stage (after route) stores, for each request, which model version answered
it, under the tenant and the request id (`x-request-id` of the answer), for
`feedback.ttl_s`. A score names that id; only the tenant that made the request can score
it, once. Scores go to the quality book and the `kvserve:gateway_feedback_score` histogram.
"""

from __future__ import annotations

import json
import math
from typing import Any, Awaitable, Callable

from kvserve.gateway.access.auth import KeySource, authenticate
from kvserve.gateway.access.settlement import Settlement
from kvserve.gateway.context import RequestContext
from kvserve.gateway.errors import bad_request
from kvserve.gateway.metrics import GatewayMetrics
from kvserve.gateway.output_config import FeedbackConfig
from kvserve.gateway.proxy import send_error
from kvserve.gateway.quality.book import QualityBook
from kvserve.gateway.store.kvstore import Store
from kvserve.gateway.store.redis_link import RedisUnavailable
from kvserve.openai_error import OpenAIError

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
MAX_BODY = 16 << 10
THUMBS = {"up": 1.0, "down": 0.0}


def handle_key(tenant: str, request_id: str) -> str:
    return f"fb:{tenant}:{request_id}"


class Remember:
    """The stage: note which version answers this request, in the background."""

    def __init__(self, store: Store, settlement: Settlement, config: FeedbackConfig) -> None:
        self.store = store
        self.settlement = settlement
        self.ttl_s = config.ttl_s

    async def run(self, ctx: RequestContext) -> None:
        request, version = ctx.request, ctx.version
        assert request is not None and version is not None
        value = json.dumps({"model": version.model, "version": version.name}).encode()
        self.settlement.run(self.keep(handle_key(ctx.identity.tenant, request.request_id), value))

    async def keep(self, key: str, value: bytes) -> None:
        try:
            await self.store.set(key, value, self.ttl_s)
        except RedisUnavailable:
            pass  # this answer cannot be scored; the request is not affected


def parse(body: dict[str, Any]) -> tuple[str, float, str | None]:
    """(request id, score in [0, 1], thumbs or None) from `{"id", "score"}` or `{"id", "thumbs"}`."""
    request_id, score, thumbs = body.get("id"), body.get("score"), body.get("thumbs")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 256:
        raise bad_request("id must be the x-request-id of an answer (a string)", "id")
    if (score is None) == (thumbs is None):
        raise bad_request("give either score (a number from 0 to 1) or thumbs ('up' or 'down')", "score")
    if thumbs is not None:
        if thumbs not in THUMBS:
            raise bad_request("thumbs must be 'up' or 'down'", "thumbs")
        return request_id, THUMBS[thumbs], thumbs
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) \
            or not 0 <= score <= 1:
        raise bad_request("score must be a number from 0 to 1", "score")
    return request_id, float(score), None


class FeedbackAPI:
    """The `POST /v1/feedback` handler. Reads its settings at each call (reload-safe)."""

    def __init__(self, keys: Callable[[], KeySource | None], store: Store, book: QualityBook,
                 config: Callable[[], FeedbackConfig], metrics: GatewayMetrics) -> None:
        self.keys, self.store, self.book, self.config, self.metrics = keys, store, book, config, metrics

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        try:
            body = await self.handle(scope, receive)
        except OpenAIError as error:
            await send_error(send, error)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})

    async def handle(self, scope: dict[str, Any], receive: Receive) -> dict[str, Any]:
        if not self.config().enabled:
            raise OpenAIError(404, "feedback is not enabled on this gateway", code="not_found")
        keys = self.keys()
        tenant = (await authenticate(keys, scope["headers"])).tenant if keys is not None else "anonymous"
        request_id, score, thumbs = parse(await read_body(receive))
        key = handle_key(tenant, request_id)
        try:
            raw = await self.store.get(key)
            if raw is None:
                raise OpenAIError(404, "no answer with this id to score (unknown, expired, or another tenant's)",
                                  code="answer_not_found", param="id")
            if not await self.store.claim(key + ":scored", b"1", self.config().ttl_s):
                raise OpenAIError(409, "this answer has been scored already", code="feedback_exists", param="id")
        except RedisUnavailable:
            raise OpenAIError(503, "feedback cannot be stored right now", "service_unavailable",
                              code="feedback_unavailable") from None
        answered = json.loads(raw)
        self.book.feedback(answered["model"], answered["version"], score, thumbs)
        self.metrics.output.feedback.labels(answered["model"], answered["version"]).observe(score)
        return {"object": "feedback", "id": request_id, "model": answered["model"], "version": answered["version"],
                "score": score}


async def read_body(receive: Receive) -> dict[str, Any]:
    data = b""
    while True:
        message = await receive()
        data += message.get("body", b"")
        if len(data) > MAX_BODY:
            raise OpenAIError(413, "feedback body too large", code="request_too_large")
        if not message.get("more_body", False):
            break
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        raise bad_request("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body
