"""Part 2's request path around the proxy: who is asking, may they, can it be answered
without the upstream, and what did it cost.

    identify (API key -> tenant, priority tier)
    -> replay_stored (resumed stream, Idempotency-Key)
    -> check (model allowed, control tokens, sizes)
    -> admit (one Lua call: all limits and budgets; 429 with headers)
    -> serve_cached (exact cache, then semantic cache) -> tap (proxy's send: usage, SSE ids, capture)
    -> finish (background: settle real usage, store cache / idempotent answer)
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Awaitable, Callable

from kvserve.gateway import pii
from kvserve.gateway.access_config import TenantLimits
from kvserve.gateway.auth import FileKeys, KeySource, RedisKeys, authenticate, forbidden_model
from kvserve.gateway.cache import cache_key, deterministic
from kvserve.gateway.config import GatewayConfig
from kvserve.gateway.errors import bad_request
from kvserve.gateway.keys import KeyLimits
from kvserve.gateway.kvstore import MemoryStore, RedisStore, Store
from kvserve.gateway.metrics import AccessMetrics
from kvserve.gateway.ratelimit import Charge, Decision, Limiter, MemoryLimiter, Usage, limit_headers, refusal
from kvserve.gateway.ratelimit_redis import RedisLimiter
from kvserve.gateway.redis_link import RedisLink, RedisUnavailable
from kvserve.gateway.request import ClientRequest
from kvserve.gateway.responses import (
    Ticket,
    finish_ticket,
    release_idempotency_key,
    replay_entry,
    serve_cached,
    serve_idempotent,
)
from kvserve.gateway.safety import DEFAULT_CONTROL_TOKENS, InputGuard, tokenizer_special_tokens
from kvserve.gateway.semantic_cache import SemanticCache, partition_key, query_text
from kvserve.gateway.streams import StreamRecorder, replay, stream_key
from kvserve.gateway.tap import ResponseTap
from kvserve.gateway.versions import VersionRoute
from kvserve.openai_error import OpenAIError

log = logging.getLogger("kvserve.gateway")
Send = Callable[[dict[str, Any]], Awaitable[None]]
NO_TENANT_LIMITS = TenantLimits()


def access_enabled(config: GatewayConfig) -> bool:
    """Part 2's path runs when any of its features is configured; else part 1's lean path."""
    return (config.auth.enabled or config.cache.enabled or config.streams.resumable
            or config.redis.url is not None or bool(config.tenants) or semantic_enabled(config))


def semantic_enabled(config: GatewayConfig) -> bool:
    return any(model.semantic_cache.enabled for model in config.models.values())


def build_guards(config: GatewayConfig) -> dict[str, InputGuard]:
    guards = {}
    for name, model in config.models.items():
        tokens = list(DEFAULT_CONTROL_TOKENS if model.special_tokens is None else model.special_tokens)
        if model.tokenizer_config is not None:
            tokens += tokenizer_special_tokens(model.tokenizer_config)
        guards[name] = InputGuard(tokens, config.limits.max_messages, config.limits.max_prompt_tokens)
    return guards


class AccessControl:
    """One per gateway process; `configure` applies a reloaded config (Redis stays)."""

    def __init__(self, config: GatewayConfig, metrics: AccessMetrics) -> None:
        self.metrics = metrics
        self.link: RedisLink | None = None
        if config.redis.url is not None:
            self.link = RedisLink(config.redis, lambda op: metrics.redis_errors.labels(op).inc())
        self.limiter: Limiter = MemoryLimiter() if self.link is None else RedisLimiter(
            self.link, config.limits.concurrency_lease_s)
        self.store: Store = MemoryStore(config.cache.max_entries) if self.link is None else RedisStore(self.link)
        self.background: set[asyncio.Task[None]] = set()
        self.unsettled: list[tuple[Charge, Decision, Usage]] = []  # retried when Redis is back
        self.semantic: SemanticCache | None = None  # built once some model enables it; kept across reloads
        self.configure(config)

    def configure(self, config: GatewayConfig) -> None:
        self.config = config
        self.guards = build_guards(config)
        self.sensitive_header = config.privacy.sensitive_header.lower().encode()
        self.keys: KeySource | None = None
        if config.auth.enabled and config.auth.store == "file":
            assert config.auth.keys_file is not None
            self.keys = FileKeys(config.auth.keys_file, config.auth.cache_s)
        elif config.auth.enabled:
            assert self.link is not None, "auth store 'redis' needs redis.url (checked by the config)"
            self.keys = RedisKeys(self.link, config.auth.cache_s)
        if self.semantic is None and semantic_enabled(config):
            self.semantic = SemanticCache(self.store)
            self.start()

    def start(self) -> None:
        """Begin loading the embedding model in the background (needs the running loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not started yet: GatewayState.start calls this again
        if self.semantic is not None:
            self.semantic.embedder.warm()

    async def identify(self, request: ClientRequest, headers: list[tuple[bytes, bytes]]) -> Ticket:
        ticket = Ticket(headers=headers, started=time.monotonic())
        if self.keys is None:
            return ticket
        try:
            ticket.record = await authenticate(self.keys, headers)
        except OpenAIError as error:
            self.metrics.refused.labels(error.code or "auth").inc()
            raise
        ticket.tenant, ticket.key_id = ticket.record.tenant, ticket.record.key_id
        tier = ticket.record.priority  # a key may lower its priority by header, never raise it
        request.priority = max(request.priority, tier) if request.priority_set else tier
        return ticket

    async def replay_stored(self, ticket: Ticket, request: ClientRequest, send: Send) -> bool:
        """Answer a resumed stream or a repeated Idempotency-Key request from the store."""
        if request.stream and self.config.streams.resumable:
            last = ticket.header(b"last-event-id")
            if last is None:
                return False
            try:
                after = int(last)
            except ValueError:
                raise bad_request("Last-Event-ID must be an integer event id") from None
            key = stream_key(ticket.tenant, request.request_id)
            s = self.config.streams
            ticket.status = 200
            await replay(self.store, key, after, send, s.poll_s, self.config.timeouts.idle_s,
                         [(b"x-request-id", request.request_id.encode("latin-1"))])
            self.metrics.resumed.inc()
            return True
        idem = ticket.header(b"idempotency-key")
        if request.stream or idem is None:
            return False
        ticket.idem_key = f"idem:{ticket.tenant}:{ticket.key_id}:{idem.decode('latin-1')[:256]}"
        return await serve_idempotent(self.store, ticket, send, self.config.streams.idempotency_claim_s)

    def check(self, ticket: Ticket, request: ClientRequest) -> None:
        """403 for a model the key may not use; 400/413 for unsafe or oversized input. A model
        the gateway does not serve passes here: the model table answers 404 for it next."""
        limits = ticket.record.limits if ticket.record is not None else KeyLimits()
        try:
            if ticket.record is not None and not ticket.record.allows(request.model):
                raise forbidden_model(request.model)
            guard = self.guards.get(request.model)
            if guard is not None:
                guard.check(request.payload, len(request.body), request.route.est_prompt_tokens, limits)
            self._max_tokens(request, limits)
        except OpenAIError as error:
            self.metrics.refused.labels(error.code or "invalid").inc()
            raise

    def _max_tokens(self, request: ClientRequest, limits: KeyLimits) -> None:
        field = "max_completion_tokens" if "max_completion_tokens" in request.payload else "max_tokens"
        asked = request.payload.get(field)
        if asked is not None and (not isinstance(asked, int) or isinstance(asked, bool) or asked < 1):
            raise bad_request(f"'{field}' must be a positive integer", field)
        if asked is not None and limits.max_tokens and asked > limits.max_tokens:
            raise bad_request(f"'{field}' is {asked}, over this key's limit of {limits.max_tokens}", field)
        if asked is None and limits.max_tokens:
            request.overrides["max_tokens"] = limits.max_tokens

    async def admit(self, ticket: Ticket, request: ClientRequest, version: VersionRoute) -> None:
        """Charge the estimate against every limit in one call; 429 when one is reached."""
        record = ticket.record
        payload = {**request.payload, **request.overrides}
        max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens") or \
            self.config.limits.default_max_tokens
        ticket.model = version.model
        ticket.charge = Charge(ticket.key_id, ticket.tenant, version.model, uuid.uuid4().hex,
                               request.route.est_prompt_tokens + int(max_tokens),
                               record.limits if record is not None else KeyLimits(),
                               self.config.tenants.get(ticket.tenant) or NO_TENANT_LIMITS)
        if not ticket.charge.limited:
            ticket.decision = Decision()
            return
        ticket.decision = await self._decide(ticket.charge)
        if not ticket.decision.admitted:
            self.metrics.refused.labels(f"limit_{ticket.decision.code}").inc()
            error = refusal(ticket.charge, ticket.decision)
            ticket.decision = None  # nothing to settle
            raise error
        ticket.limit_headers = limit_headers(ticket.charge, ticket.decision)

    async def _decide(self, charge: Charge) -> Decision:
        try:
            return await self.limiter.admit(charge)
        except RedisUnavailable:
            if self.config.redis.on_failure == "closed":
                raise OpenAIError(503, "rate limits cannot be checked right now; retry later", "service_unavailable", code="rate_limiter_unavailable", headers={"retry-after": "1"}) from None
            self.metrics.unenforced.inc()
            return Decision(enforced=False)

    async def serve_cached(self, ticket: Ticket, request: ClientRequest, version: VersionRoute,
                           send: Send) -> bool:
        """Look the request up in the exact cache, then the semantic one; True when answered."""
        if await self._serve_exact(ticket, request, version, send):
            return True
        return await self._serve_semantic(ticket, request, version, send)

    async def _serve_exact(self, ticket: Ticket, request: ClientRequest, version: VersionRoute,
                           send: Send) -> bool:
        if not self._cacheable(ticket, request):
            if self.config.cache.enabled:
                self.metrics.cache.labels(version.model, "bypass").inc()
            return False
        ticket.cache_key = cache_key(ticket.tenant, version.model, version.name, request.path, request.payload)
        ticket.prompt = request.route.prompt
        hit = await serve_cached(self.store, ticket, request, send)
        self.metrics.cache.labels(version.model, "hit" if hit else "miss").inc()
        return hit

    async def _serve_semantic(self, ticket: Ticket, request: ClientRequest, version: VersionRoute,
                              send: Send) -> bool:
        settings = self.config.models[request.model].semantic_cache
        if self.semantic is None or not settings.enabled:
            return False
        count = self.metrics.semantic.labels
        text = query_text(request.payload, settings.include_multi_turn) if self._storable(ticket, request) else None
        # unlike the exact cache, scan for PII before the lookup: a PII prompt could be near a stored one
        if text is None or not request.path.endswith("chat/completions") or pii.find(request.route.prompt):
            count(version.model, "bypass").inc()
            return False
        partition = partition_key(ticket.tenant, version.model, version.name, request.path, request.payload)
        query = await self.semantic.query(partition, text, settings)
        if query is None:
            count(version.model, "unavailable").inc()
            return False
        try:
            found, similarity = await self.semantic.lookup(query)
        except RedisUnavailable:
            count(version.model, "unavailable").inc()
            return False
        if similarity is not None:
            self.metrics.semantic_similarity.labels(version.model).observe(similarity)
        ticket.semantic, ticket.prompt = query, request.route.prompt
        count(version.model, "hit" if found else "miss").inc()
        if found is None:
            return False
        ticket.cached, ticket.semantic_hit = found.entry, True
        await replay_entry(found.entry, ticket, request, send,
                           [(b"x-cache", b"semantic"), (b"x-cache-similarity", b"%.4f" % found.similarity)])
        return True

    def _cacheable(self, ticket: Ticket, request: ClientRequest) -> bool:
        if not self.config.cache.enabled or not self.config.models[request.model].cache:
            return False
        return self._storable(ticket, request)  # the PII scan runs before storing, off the answer's path

    def _storable(self, ticket: Ticket, request: ClientRequest) -> bool:
        """Deterministic, and the client did not ask us not to keep it."""
        if not deterministic(request.payload):
            return False
        control = (ticket.header(b"cache-control") or b"").lower()
        return b"no-store" not in control and (ticket.header(self.sensitive_header) or b"").lower() not in (
            b"1", b"true")

    def tap(self, ticket: Ticket, request: ClientRequest, send: Send) -> ResponseTap:
        """The `send` the proxy writes to: usage, SSE ids and capture for this request."""
        wants_usage = bool((request.payload.get("stream_options") or {}).get("include_usage"))
        if request.stream and not wants_usage:
            options = dict(request.payload.get("stream_options") or {})
            request.overrides["stream_options"] = {**options, "include_usage": True}
        if request.stream and self.config.streams.resumable:
            ticket.recorder = StreamRecorder(self.store, stream_key(ticket.tenant, request.request_id),
                                             self.config.streams.ttl_s)
        ticket.tap = ResponseTap(send, request.stream, request.path.endswith("chat/completions"), wants_usage,
                                 ticket.limit_headers, ticket.recorder,
                                 assemble=ticket.cache_key is not None or ticket.semantic is not None)
        return ticket.tap

    def finish(self, ticket: Ticket, status: int) -> None:
        """Settle usage and store answers in the background (the client is not kept waiting)."""
        if ticket.recorder is not None:
            ticket.recorder.finish()
        if ticket.charge is None or ticket.decision is None:  # refused before admission: nothing to settle
            task = asyncio.ensure_future(release_idempotency_key(self.store, ticket))
        else:
            task = asyncio.ensure_future(finish_ticket(self, ticket, status))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def close(self) -> None:
        if self.background:
            await asyncio.wait(set(self.background), timeout=5)
        if self.semantic is not None:
            self.semantic.close()
        if self.link is not None:
            await self.link.close()
