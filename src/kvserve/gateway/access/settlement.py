"""The end of a request with access features on, in the background (the client is not kept
waiting): real usage settled against the limits, usage metrics, answers stored for the
caches and the Idempotency-Key, the key released when no answer is kept."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Coroutine

from kvserve.gateway.access import pii
from kvserve.gateway.access.ratelimit import Charge, Decision, Limiter, Usage
from kvserve.gateway.config import GatewayConfig
from kvserve.gateway.context import RequestContext
from kvserve.gateway.metrics import AccessMetrics
from kvserve.gateway.store import idempotency
from kvserve.gateway.store.cache import entry_from_json
from kvserve.gateway.store.kvstore import Store
from kvserve.gateway.store.redis_link import RedisUnavailable
from kvserve.gateway.store.semantic_cache import SemanticCache

log = logging.getLogger("kvserve.gateway")
MAX_UNSETTLED = 10_000  # settlements kept for retry while Redis is down


class Settlement:
    """One per process, kept across reloads: the background tasks and the settlements that
    failed while Redis was down (retried by the next one that works)."""

    def __init__(self, limiter: Limiter, store: Store) -> None:
        self.limiter = limiter
        self.store = store
        self.background: set[asyncio.Task[None]] = set()
        self.unsettled: list[tuple[Charge, Decision, Usage]] = []

    def run(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def settle(self, charge: Charge, decision: Decision, usage: Usage) -> None:
        """Settle now, and retry settlements that failed while Redis was down."""
        pending = self.unsettled
        try:
            await self.limiter.settle(charge, decision, usage)
            while pending:
                await self.limiter.settle(*pending[-1])
                pending.pop()
        except RedisUnavailable:
            if len(pending) < MAX_UNSETTLED:
                pending.append((charge, decision, usage))

    async def close(self) -> None:
        if self.background:
            await asyncio.wait(set(self.background), timeout=5)


class Accounts:
    """What one config says to do at the end of a request (see the module docstring)."""

    def __init__(self, settlement: Settlement, semantic: SemanticCache | None, config: GatewayConfig,
                 metrics: AccessMetrics) -> None:
        self.settlement = settlement
        self.store = settlement.store
        self.semantic = semantic
        self.cache = config.cache
        self.streams = config.streams
        self.metrics = metrics

    def start(self, ctx: RequestContext) -> None:
        """Finish the request in the background (the client is not kept waiting)."""
        if ctx.relay.recorder is not None:
            ctx.relay.recorder.finish()
        self.settlement.run(self.finish(ctx))

    def log_fields(self, ctx: RequestContext) -> dict[str, object]:
        """The key's public id, never the key."""
        lookup = ctx.lookup
        return {"tenant": ctx.identity.tenant, "key_id": ctx.identity.key_id,
                "cache": lookup is not None and lookup.hit is not None}

    async def finish(self, ctx: RequestContext) -> None:
        if ctx.admission is not None:  # else refused before admission: nothing to settle
            usage = usage_of(ctx)
            model = ctx.admission.charge.model
            self.count(ctx, model, usage)
            await self.settlement.settle(ctx.admission.charge, ctx.admission.decision, usage)
            await self.keep(ctx, model)
        if ctx.claim is not None and ctx.claim.held:
            await idempotency.release(self.store, ctx.claim.key)

    def count(self, ctx: RequestContext, model: str, usage: Usage) -> None:
        tenant, m = ctx.identity.tenant, self.metrics
        m.usage_counted(tenant, model, usage.prompt_tokens, usage.completion_tokens)
        lookup = ctx.lookup
        if lookup is not None and lookup.hit is not None:
            saved = m.semantic_saved if lookup.semantic_hit else m.cache_saved
            saved.labels(model).inc(lookup.hit.seconds)

    async def keep(self, ctx: RequestContext, model: str) -> None:
        """Store what later requests may reuse: the answer for the caches and the Idempotency-Key."""
        tap, lookup, claim = ctx.relay.tap, ctx.lookup, ctx.claim
        try:
            if ctx.outcome.status == 200 and tap is not None and tap.status == 200:
                if claim is not None and tap.body:
                    await self.keep_answer(claim.key, bytes(tap.body), ctx)
                await self.store_entry(ctx, model)
            elif ctx.outcome.status == 200 and lookup is not None and lookup.hit is not None and claim and claim.held:
                await self.keep_answer(claim.key, lookup.hit.as_json(), ctx)
        except RedisUnavailable:
            log.debug("answer not stored: redis down")

    async def keep_answer(self, key: str, answer: bytes, ctx: RequestContext) -> None:
        if len(answer) > self.streams.idempotency_max_bytes:
            return  # not kept: finish() frees the key
        await idempotency.keep(self.store, key, answer, self.streams.idempotency_ttl_s)
        if ctx.claim is not None:
            ctx.claim.held = False

    async def store_entry(self, ctx: RequestContext, model: str) -> None:
        lookup, tap = ctx.lookup, ctx.relay.tap
        if lookup is None or tap is None or (lookup.key is None and lookup.semantic is None) or pii.find(lookup.prompt):
            return  # no cache may keep it
        entry = tap.assembler.entry() if tap.assembler is not None else entry_from_json(bytes(tap.body), tap.chat)
        if entry is None:
            return
        entry.seconds = time.monotonic() - ctx.started
        raw = entry.dumps()
        if len(raw) > self.cache.max_entry_bytes:
            return
        if lookup.key is not None:
            await self.store.set(lookup.key, raw, self.cache.ttl_s)
        if lookup.semantic is not None and self.semantic is not None:
            await self.semantic.add(lookup.semantic, raw)
            self.metrics.semantic_stored.labels(model).inc()


class NoAccounts:
    """Without access features there is nothing to account for."""

    def start(self, ctx: RequestContext) -> None:
        return None

    def log_fields(self, ctx: RequestContext) -> dict[str, object]:
        return {}


def usage_of(ctx: RequestContext) -> Usage:
    lookup = ctx.lookup
    if lookup is not None and lookup.hit is not None:
        u = lookup.hit.usage or {}
        return Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)), cache_hit=True)
    usage = ctx.relay.tap.json_usage() if ctx.relay.tap is not None else None
    if not usage:
        return Usage()
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
