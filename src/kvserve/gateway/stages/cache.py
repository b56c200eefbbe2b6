"""cache: answer from the exact cache, then the semantic one (no refusals). Without either: a null stage.

Only deterministic requests the client lets us keep qualify. A request that misses keeps
its lookup, so the settle stage can store its answer.
"""

from __future__ import annotations

from dataclasses import replace

from kvserve.gateway.access import pii
from kvserve.gateway.access_config import CacheConfig
from kvserve.gateway.config import GatewayConfig
from kvserve.gateway.context import CacheLookup, RequestContext
from kvserve.gateway.metrics import AccessMetrics
from kvserve.gateway.store.cache import Entry, cache_key, deterministic
from kvserve.gateway.store.kvstore import Store
from kvserve.gateway.store.redis_link import RedisUnavailable
from kvserve.gateway.store.semantic_cache import SemanticCache, partition_key, query_text

JSON = b"application/json"


class Cache:
    def __init__(self, config: GatewayConfig, store: Store, semantic: SemanticCache | None,
                 metrics: AccessMetrics) -> None:
        self.cache: CacheConfig = config.cache
        self.models = config.models
        self.sensitive_header = config.privacy.sensitive_header.lower().encode()
        self.store = store
        self.semantic = semantic
        self.metrics = metrics

    async def run(self, ctx: RequestContext) -> None:
        ctx.lookup = CacheLookup()
        storable = self.storable(ctx)
        if not await self.exact(ctx, storable):
            await self.similar(ctx, storable)

    def storable(self, ctx: RequestContext) -> bool:
        """Deterministic, and the client did not ask us not to keep it."""
        request = ctx.request
        assert request is not None
        if not deterministic(request.payload):
            return False
        control = (ctx.header(b"cache-control") or b"").lower()
        return b"no-store" not in control and (ctx.header(self.sensitive_header) or b"").lower() not in (b"1", b"true")

    async def exact(self, ctx: RequestContext, storable: bool) -> bool:
        request, version, lookup = ctx.request, ctx.version, ctx.lookup
        assert request is not None and version is not None and lookup is not None
        if not (self.cache.enabled and self.models[request.model].cache and storable):
            if self.cache.enabled:
                self.metrics.cache_result(version.model, "bypass")
            return False  # the PII scan runs before storing, off the answer's path
        lookup.key = cache_key(ctx.identity.tenant, version.model, version.name, request.path, request.payload)
        lookup.prompt = request.route.prompt
        try:
            raw = await self.store.get(lookup.key)
        except RedisUnavailable:
            raw = None
        self.metrics.cache_result(version.model, "hit" if raw is not None else "miss")
        if raw is None:
            return False
        lookup.hit = Entry.loads(raw)
        await replay_entry(ctx, lookup.hit, [(b"x-cache", b"hit")])
        return True

    async def similar(self, ctx: RequestContext, storable: bool) -> None:
        request, version, lookup = ctx.request, ctx.version, ctx.lookup
        assert request is not None and version is not None and lookup is not None
        settings = self.models[request.model].semantic_cache
        if self.semantic is None or not settings.enabled:
            return
        count = self.metrics.semantic.labels
        text = query_text(request.payload, settings.include_multi_turn) if storable else None
        # unlike the exact cache, scan for PII before the lookup: a PII prompt could be near a stored one
        if text is None or not request.path.endswith("chat/completions") or pii.find(request.route.prompt):
            count(version.model, "bypass").inc()
            return
        partition = partition_key(ctx.identity.tenant, version.model, version.name, request.path, request.payload)
        query = await self.semantic.query(partition, text, settings)
        if query is None:
            count(version.model, "unavailable").inc()
            return
        try:
            found, similarity = await self.semantic.lookup(query)
        except RedisUnavailable:
            count(version.model, "unavailable").inc()
            return
        if similarity is not None:
            self.metrics.semantic_similarity.labels(version.model).observe(similarity)
        lookup.semantic, lookup.prompt = query, request.route.prompt
        count(version.model, "hit" if found else "miss").inc()
        if found is not None:
            lookup.hit, lookup.semantic_hit = found.entry, True
            await replay_entry(ctx, found.entry, [(b"x-cache", b"semantic"),
                                                  (b"x-cache-similarity", b"%.4f" % found.similarity)])


async def replay_entry(ctx: RequestContext, entry: Entry, cache_headers: list[tuple[bytes, bytes]]) -> None:
    """Answer from a cache entry, as JSON or SSE as the request asks, naming the model it asked for."""
    request = ctx.request
    assert request is not None
    entry = replace(entry, model=request.payload["model"])
    if request.stream:
        options = request.payload.get("stream_options") or {}
        body, kind = entry.as_sse(bool(options.get("include_usage"))), b"text/event-stream"
    else:
        body, kind = entry.as_json(), JSON
    limits = ctx.admission.headers if ctx.admission is not None else []
    await ctx.answer(200, [(b"content-type", kind), *cache_headers,
                           (b"x-request-id", request.request_id.encode("latin-1")), *limits], body)
