"""The long-lived parts the stages share, built once per process: the Redis link, the
store, the limiter, the semantic cache and the settlement of usage. A config reload
rebuilds the stages over them (Redis settings need a restart)."""

from __future__ import annotations

import asyncio
import logging

from kvserve.gateway.access.auth import FileKeys, KeySource, RedisKeys
from kvserve.gateway.access.ratelimit import Limiter, MemoryLimiter
from kvserve.gateway.access.ratelimit_redis import RedisLimiter
from kvserve.gateway.access.settlement import Settlement
from kvserve.gateway.audit import AuditLog
from kvserve.gateway.config import GatewayConfig
from kvserve.gateway.metrics import AccessMetrics
from kvserve.gateway.quality.book import QualityBook
from kvserve.gateway.quality.mirror import Mirror
from kvserve.gateway.store.kvstore import MemoryStore, RedisStore, Store
from kvserve.gateway.store.redis_link import RedisLink
from kvserve.gateway.store.semantic_cache import Embedder, SemanticCache

log = logging.getLogger("kvserve.gateway")


def access_enabled(config: GatewayConfig) -> bool:
    """Keys, limits, caches or resumable streams: the stages that need the store and the settlement run."""
    return (config.auth.enabled or config.cache.enabled or config.streams.resumable
            or config.redis.url is not None or bool(config.tenants) or semantic_enabled(config))


def semantic_enabled(config: GatewayConfig) -> bool:
    return any(model.semantic_cache.enabled for model in config.models.values())


class Backends:
    def __init__(self, config: GatewayConfig, metrics: AccessMetrics) -> None:
        self.link: RedisLink | None = None
        if config.redis.url is not None:
            self.link = RedisLink(config.redis, lambda op: metrics.redis_errors.labels(op).inc())
        self.limiter: Limiter = MemoryLimiter() if self.link is None else RedisLimiter(
            self.link, config.limits.concurrency_lease_s)
        self.store: Store = RedisStore(self.link) if self.link is not None else MemoryStore(
            config.cache.max_entries, max_bytes=config.memory.max_bytes)
        self.settlement = Settlement(self.limiter, self.store)
        self.semantic: SemanticCache | None = None  # built once some model enables it; kept across reloads
        self.redis = config.redis
        self.key_source: KeySource | None = None  # the current pipeline's, see keys()
        self._watch: asyncio.Task[None] | None = None
        self.audit: AuditLog | None = None  # opened by configure; reopened when audit.path changes
        self.audit_path: str | None = None
        self.quality = QualityBook()  # shadow comparisons and feedback per model version
        self.mirror = Mirror(self.quality)
        self._embedder: Embedder | None = None  # the shadow comparisons' model, unless the semantic cache has one
        self.configure(config)

    def configure(self, config: GatewayConfig) -> None:
        if config.redis != self.redis:
            log.warning("redis settings change needs a restart; keeping the current connection")
        if isinstance(self.store, MemoryStore):
            self.store.max_bytes = config.memory.max_bytes
        if config.audit.path != self.audit_path:
            if self.audit is not None:
                self.audit.close()
            self.audit = AuditLog.open(config.audit.path) if config.audit.path else None
            self.audit_path = config.audit.path
        if self.semantic is None and semantic_enabled(config):
            self.semantic = SemanticCache(self.store, self._embedder)
            self.start()

    def embedder(self) -> Embedder:
        """The one embedding model of this process (semantic cache and shadow comparisons share it)."""
        if self.semantic is not None:
            return self.semantic.embedder
        if self._embedder is None:
            self._embedder = Embedder()
        return self._embedder

    def keys(self, config: GatewayConfig) -> KeySource | None:
        """Where API keys are read, or None without auth."""
        if not config.auth.enabled:
            self.key_source = None
        elif config.auth.store == "file":
            assert config.auth.keys_file is not None
            self.key_source = FileKeys(config.auth.keys_file, config.auth.cache_s)
        else:
            assert self.link is not None, "auth store 'redis' needs redis.url (checked by the config)"
            self.key_source = RedisKeys(self.link, config.auth.cache_s)
        return self.key_source

    def forget_key(self, key_id: str) -> None:
        """A key changed in its store (revoked by the admin API): read it again on its next use."""
        if self.key_source is not None:
            self.key_source.forget(key_id)

    def start(self) -> None:
        """Begin watching Redis and loading the embedding model in the background (needs the running loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not started yet: GatewayState.start calls this again
        if self.link is not None and self._watch is None:
            self._watch = asyncio.ensure_future(self.link.watch(self.redis.probe_interval_s))
        if self.semantic is not None:
            self.semantic.embedder.warm()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await self.mirror.close()
        await self.settlement.close()
        if self.semantic is not None:
            self.semantic.close()
        elif self._embedder is not None:
            self._embedder.close()
        if self.link is not None:
            await self.link.close()
        if self.audit is not None:
            self.audit.close()
