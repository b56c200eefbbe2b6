"""The gateway's typed configuration, read from YAML and validated when built.

A bad file raises `ConfigError` whose message names the file and the field path
(`models.llama.versions.v1.pool.policy: unknown policy ...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kvserve.gateway.access_config import (AuthConfig, CacheConfig, LimitsConfig, MemoryConfig, PrivacyConfig,
                                           RedisConfig, SemanticCacheConfig, StreamsConfig, TenantLimits)
from kvserve.gateway.batches_config import BatchesConfig
from kvserve.gateway.fleet.fleet_config import DnsDiscoveryConfig, HoldConfig
from kvserve.gateway.output_config import AuditConfig, FeedbackConfig, RedactionConfig, ShadowConfig
from kvserve.gateway.rollouts.config import RolloutsConfig
from kvserve.gateway.routing.policies import POLICIES, PolicyOptions
from kvserve.yaml_file import read_yaml

class ConfigError(ValueError):
    """The configuration file is missing, not YAML, or has an invalid field."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointConfig(Section):
    url: str  # base URL of an OpenAI-compatible server, e.g. http://10.0.0.5:8000
    api_key: str | None = None  # sent upstream as "Authorization: Bearer ..."; client keys never are

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")) or len(url.split("//", 1)[1]) == 0:
            raise ValueError("must start with http:// or https:// and name a host")
        return url.rstrip("/")


class PoolConfig(Section):
    endpoints: list[EndpointConfig] = []  # a plain URL string is accepted for each
    policy: str = "least_request"  # a name in kvserve.gateway.routing.policies.POLICIES
    options: PolicyOptions = PolicyOptions()  # knobs of the policies
    discovery: DnsDiscoveryConfig | None = None  # more endpoints from DNS records (headless Service)

    @field_validator("endpoints", mode="before")
    @classmethod
    def _urls_as_endpoints(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"url": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, name: str) -> str:

        if name not in POLICIES:
            raise ValueError(f"unknown policy '{name}' (choose from {', '.join(POLICIES)})")
        return name


class LongPromptConfig(Section):
    threshold_tokens: int = Field(gt=0)  # estimated prompt tokens at or above which `pool` serves
    pool: PoolConfig  # endpoints for long prompts


class VersionConfig(Section):
    weight: float = Field(1.0, ge=0)  # share of unpinned traffic (relative to the other versions)
    upstream_model: str | None = None  # model name sent upstream (default: the gateway's model name)
    pool: PoolConfig  # endpoints serving this version
    long_prompt: LongPromptConfig | None = None  # optional sub-pool for long prompts


class ModelConfig(Section):
    versions: dict[str, VersionConfig] = {}  # version name -> its pool (or use the shorthand below)
    sticky: bool = True  # a user (session header or `user` field) always gets the same version
    pool: PoolConfig | None = None  # shorthand for one version called "default"
    upstream_model: str | None = None  # shorthand: that version's upstream_model
    long_prompt: LongPromptConfig | None = None  # shorthand: that version's long_prompt
    special_tokens: list[str] | None = None  # chat-template control tokens refused in content (None: defaults)
    tokenizer_config: Path | None = None  # tokenizer_config.json whose special tokens are refused too
    cache: bool = True  # exact response cache for this model (when cache.enabled)
    semantic_cache: SemanticCacheConfig = SemanticCacheConfig()  # opt-in cache of paraphrased requests

    @model_validator(mode="after")
    def _one_form(self) -> ModelConfig:
        if self.pool is not None and self.versions:
            raise ValueError("give either `pool` (one version) or `versions`, not both")
        if self.pool is None and not self.versions:
            raise ValueError("needs `pool` or at least one entry in `versions`")
        if self.pool is not None:  # frozen: fill `versions` once, while being built
            default = VersionConfig(pool=self.pool, upstream_model=self.upstream_model, long_prompt=self.long_prompt)
            object.__setattr__(self, "versions", {"default": default})
        return self


class ServerConfig(Section):
    host: str = "127.0.0.1"  # listen address (a restart is needed to change it)
    port: int = Field(8080, ge=0, le=65535)  # listen port (a restart is needed to change it)
    shutdown_grace_s: float = Field(30.0, ge=0)  # on SIGTERM, how long in-flight requests may finish
    drain_delay_s: float = Field(0.0, ge=0)  # on SIGTERM, /ready says 503 this long before closing
    log_requests: bool = True  # one structured log line per request (never the prompt)
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0)  # larger request bodies get 413
    chars_per_token: float = Field(4.0, gt=0)  # prompt-length estimate for length-aware routing
    session_header: str = "x-session-id"  # session key for affinity and sticky versions (else `user`)


class AdminConfig(Section):
    key: str | None = None  # admin API key; with neither key nor key_file the admin API is off
    key_file: Path | None = None  # file holding the key (first line), read when the config loads

    def resolved_key(self) -> str | None:
        if self.key_file is not None:
            return self.key_file.read_text().splitlines()[0].strip()
        return self.key


class ScrapeConfig(Section):
    interval_s: float = Field(0.1, gt=0)  # how often each endpoint's /metrics is read
    stale_after: int = Field(3, ge=1)  # stats older than this many intervals count as unknown
    timeout_s: float = Field(1.0, gt=0)  # per scrape
    path: str = "/metrics"


class HealthConfig(Section):
    interval_s: float = Field(1.0, gt=0)  # how often each endpoint's readiness is checked
    timeout_s: float = Field(1.0, gt=0)  # per check
    path: str = "/ready"
    unhealthy_after: int = Field(3, ge=1)  # consecutive failed checks while no request is in flight or answered, before no traffic
    healthy_after: int = Field(1, ge=1)  # consecutive passed checks before traffic again


class BreakerConfig(Section):
    consecutive_failures: int = Field(5, ge=1)  # failures in a row that open the breaker
    error_rate: float = Field(0.5, gt=0, le=1)  # failure fraction over window_s that opens it
    window_s: float = Field(10.0, gt=0)  # error-rate window
    min_requests: int = Field(20, ge=1)  # requests in the window before error_rate applies
    cooldown_s: float = Field(5.0, gt=0)  # open this long before half-open trial requests
    half_open_requests: int = Field(1, ge=1)  # concurrent trial requests while half-open


class RetryConfig(Section):
    max_attempts: int = Field(3, ge=1)  # attempts per request, each on a different endpoint
    backoff_base_s: float = Field(0.02, ge=0)  # first backoff; doubles per attempt, fully jittered
    backoff_max_s: float = Field(0.5, ge=0)  # cap of one backoff
    deadline_s: float = Field(120.0, gt=0)  # arrival -> first byte, all attempts and backoffs included
    retry_statuses: list[int] = [502, 503, 504]  # upstream statuses retried (before any byte is sent)


class TimeoutConfig(Section):
    connect_s: float = Field(2.0, gt=0)  # TCP connect to an endpoint
    first_byte_s: float = Field(60.0, gt=0)  # request sent -> first body byte (the first token)
    idle_s: float = Field(60.0, gt=0)  # longest gap between two chunks of a response


class PriorityConfig(Section):
    header: str = "x-priority"  # request header carrying the priority (an int or a level name)
    default: int = 0  # priority when the header is absent; lower runs first (vLLM's convention)
    levels: dict[str, int] = {"high": -1, "normal": 0, "low": 1}  # names accepted in the header
    forward_in_body: bool = True  # also set the body's `priority` field (vLLM needs --scheduling-policy priority)


class SheddingConfig(Section):
    enabled: bool = True
    queue_threshold: int = Field(16, ge=0)  # a pool is saturated when every endpoint waits on this many
    shed_at_or_above: int = 1  # priorities at or above this are refused (429) while saturated
    retry_after_s: float = Field(1.0, gt=0)  # Retry-After of the 429


class GatewayConfig(Section):
    """The whole gateway configuration (one file)."""

    server: ServerConfig = ServerConfig()
    admin: AdminConfig = AdminConfig()
    scrape: ScrapeConfig = ScrapeConfig()
    health: HealthConfig = HealthConfig()
    breaker: BreakerConfig = BreakerConfig()
    retry: RetryConfig = RetryConfig()
    timeouts: TimeoutConfig = TimeoutConfig()
    priority: PriorityConfig = PriorityConfig()
    shedding: SheddingConfig = SheddingConfig()
    hold: HoldConfig = HoldConfig()  # wait for a replica to start when a model has none ready
    redis: RedisConfig = RedisConfig()
    auth: AuthConfig = AuthConfig()
    tenants: dict[str, TenantLimits] = {}  # per-tenant limits shared by all of a tenant's keys
    limits: LimitsConfig = LimitsConfig()
    cache: CacheConfig = CacheConfig()
    streams: StreamsConfig = StreamsConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    batches: BatchesConfig = BatchesConfig()  # /v1/files and /v1/batches, passed to one replica
    rollouts: RolloutsConfig = RolloutsConfig()  # automatic rollouts (admin API /admin/rollouts)
    memory: MemoryConfig = MemoryConfig()  # the in-process store's byte budget (no Redis)
    redaction: RedactionConfig = RedactionConfig()  # PII and secrets redacted in answers, per model and tenant
    audit: AuditConfig = AuditConfig()  # append-only, hash-chained log of admin actions and requests
    shadow: ShadowConfig = ShadowConfig()  # copies of a share of a model's requests to a candidate version
    feedback: FeedbackConfig = FeedbackConfig()  # scores of answers by clients, per model version
    models: dict[str, ModelConfig] = Field(min_length=1)  # client-facing model name -> versions

    @field_validator("models")
    @classmethod
    def _no_at_in_names(cls, models: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
        for name, model in models.items():
            if "@" in name or any("@" in v for v in model.versions):
                raise ValueError(f"'{name}': model and version names cannot contain '@'")
        return models

    @model_validator(mode="after")
    def _shadow_candidates(self) -> GatewayConfig:
        for name, shadow in self.shadow.models.items():
            if shadow.candidate not in (self.models[name].versions if name in self.models else {}):
                raise ValueError(f"shadow.models.{name}: no model '{name}' with a version '{shadow.candidate}'")
        return self

    @model_validator(mode="after")
    def _auth_store(self) -> GatewayConfig:
        if self.auth.enabled and self.auth.store == "file" and self.auth.keys_file is None:
            raise ValueError("auth: store 'file' needs keys_file")
        if self.auth.enabled and self.auth.store == "redis" and self.redis.url is None:
            raise ValueError("auth: store 'redis' needs redis.url")
        return self


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-")) or "(top level)"


def parse_config(data: Any, source: str = "config") -> GatewayConfig:
    """Validate a parsed YAML document; errors name `source` and each bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{_field_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{source}: invalid gateway config\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway YAML file."""
    path = Path(path)
    data = read_yaml(path, ConfigError)
    config = parse_config(data, str(path))
    try:
        config.admin.resolved_key()
    except (OSError, IndexError) as exc:
        raise ConfigError(f"{path}: admin.key_file: cannot read a key ({exc})") from None
    return config
