"""The gateway's Prometheus metrics (its own registry: no process-wide state)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from kvserve.gateway import retry
from kvserve.gateway.access.ratelimit import REASONS as LIMIT_REASONS
from kvserve.gateway.output_metrics import OutputMetrics

if TYPE_CHECKING:
    from kvserve.gateway.config import GatewayConfig
    from kvserve.gateway.routing.table import RoutingTable

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
# the gateway's own time before the upstream call: sub-millisecond when nothing waits on Redis
ADDED_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SIMILARITY_BUCKETS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
RETRY_REASONS = (retry.CONNECT, retry.TIMEOUT, retry.STATUS)
CACHE_RESULTS = ("hit", "miss", "bypass")
SEMANTIC_RESULTS = ("hit", "miss", "bypass", "unavailable")
# refusals the access stages count (error codes; limits as limit_<reason>), shown at zero from the start
REFUSAL_REASONS = ("invalid_api_key", "auth_unavailable", "model_not_allowed", "request_too_large",
                   "control_token_in_content", "invalid_request", "rate_limiter_unavailable",
                   *(f"limit_{reason}" for reason in LIMIT_REASONS.values()))


class GatewayMetrics:
    """Requests, latency and time to first token by model, version, endpoint and status;
    the gateway's added latency, version weights, retries, breaker state changes, routing
    decisions, shed requests and Redis health. Counters that would appear only at their first
    event start at zero for the models, versions and endpoints of the config (`configure`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("kvserve:gateway_requests", "Requests answered, by final status",
                                ["model", "version", "endpoint", "status"], registry=r)
        self.latency = Histogram("kvserve:gateway_request_duration_seconds", "Request arrival to last byte",
                                 ["model", "version", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("kvserve:gateway_time_to_first_token_seconds", "Request arrival to first body byte",
                              ["model", "version", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.retries = Counter("kvserve:gateway_retries", "Attempts retried on another endpoint",
                               ["model", "version", "reason"], registry=r)
        self.routed = Counter("kvserve:gateway_routing_decisions", "Endpoints chosen by the routing policy",
                              ["model", "version", "policy", "endpoint"], registry=r)
        self.shed = Counter("kvserve:gateway_shed_requests", "Requests refused (429) by priority shedding",
                            ["model", "version"], registry=r)
        self.breaker_changes = Counter("kvserve:gateway_breaker_transitions", "Circuit breaker state changes",
                                       ["endpoint", "state"], registry=r)
        self.breaker_state = Gauge("kvserve:gateway_breaker_state", "0 closed, 1 half-open, 2 open",
                                   ["endpoint"], registry=r)
        self.in_flight = Gauge("kvserve:gateway_in_flight_requests", "Requests open per endpoint",
                               ["endpoint"], registry=r)
        self.held = Gauge("kvserve:gateway_held_requests", "Requests waiting for a ready replica (scale to zero)",
                          ["model", "version"], registry=r)
        self.added = Histogram("kvserve:gateway_added_latency_seconds",
                               "Arrival to the first upstream call: the gateway's own time (parse, auth, limits, "
                               "cache, route)", ["model", "version"], buckets=ADDED_BUCKETS, registry=r)
        self.weight = Gauge("kvserve:gateway_version_weight", "Routing weight of each version (canary share = "
                            "weight / sum of the model's weights)", ["model", "version"], registry=r)
        self.redis_up: Gauge | None = None  # exported only when the gateway uses Redis
        self.access = AccessMetrics(r)
        self.output = OutputMetrics(r)  # redaction, audit, shadow traffic

        # labelled children by label values: labels() costs more than the update itself
        self._per_request: dict[tuple[str, str, str], tuple[Any, Any, dict[int, Any]]] = {}
        self._routed: dict[tuple[str, str, str, str], Any] = {}
        self._added: dict[tuple[str, str], Any] = {}
        self._endpoints: set[str] = set()

    def configure(self, config: GatewayConfig, table: RoutingTable) -> None:
        """Zero series for every known label value, so that rates and alerts see them before
        the first event; endpoints the config no longer names leave the breaker gauge."""
        endpoints = set()
        for name, model in table.models.items():
            settings = config.models[name]
            for result in CACHE_RESULTS if config.cache.enabled and settings.cache else ():
                self.access.cache.labels(name, result)
            for result in SEMANTIC_RESULTS if settings.semantic_cache.enabled else ():
                self.access.semantic.labels(name, result)
            for vname, version in model.versions.items():
                self.shed.labels(name, vname)
                for reason in RETRY_REASONS:
                    self.retries.labels(name, vname, reason)
                endpoints.update(e.url for pool in version.all_pools() for e in pool.endpoints)
        for url in endpoints - self._endpoints:
            self.breaker_state.labels(url)
            for state in BREAKER_STATES:
                self.breaker_changes.labels(url, state)
        for url in self._endpoints - endpoints:
            self.breaker_state.remove(url)
        self._endpoints = endpoints
        for reason in REFUSAL_REASONS:
            self.access.refused.labels(reason)

    def request_done(self, model: str, version: str, endpoint: str, status: int,
                     duration: float, ttft: float | None) -> None:
        key = (model, version, endpoint)
        children = self._per_request.get(key)
        if children is None:
            children = self._per_request[key] = (self.latency.labels(*key), self.ttft.labels(*key), {})
        latency, first_token, by_status = children
        counter = by_status.get(status)
        if counter is None:
            counter = by_status[status] = self.requests.labels(model, version, endpoint, str(status))
        counter.inc()
        latency.observe(duration)
        if ttft is not None:
            first_token.observe(ttft)

    def upstream_called(self, model: str, version: str, seconds: float) -> None:
        """The first upstream call of a request starts `seconds` after its arrival."""
        child(self._added, self.added, model, version).observe(seconds)

    def route_decided(self, model: str, version: str, policy: str, endpoint: str) -> None:
        child(self._routed, self.routed, model, version, policy, endpoint).inc()

    def breaker_changed(self, endpoint: str, state: str) -> None:
        self.breaker_changes.labels(endpoint, state).inc()
        self.breaker_state.labels(endpoint).set(BREAKER_STATES[state])

    def render(self, in_flight: dict[str, int], weights: dict[tuple[str, str], float] | None = None,
               redis_up: bool | None = None) -> bytes:
        """The page, with the gauges read from the live state: endpoints' open requests,
        versions' weights (as the admin API or a rollout left them) and Redis health (None:
        no Redis configured)."""
        for endpoint, count in in_flight.items():
            self.in_flight.labels(endpoint).set(count)
        self.weight.clear()  # versions removed by a reload disappear
        for (model, version), weight in (weights or {}).items():
            self.weight.labels(model, version).set(weight)
        if redis_up is not None:
            if self.redis_up is None:
                self.redis_up = Gauge("kvserve:gateway_redis_up", "1 while the gateway reaches Redis (calls and "
                                      "probes), 0 while it does not", registry=self.registry)
            self.redis_up.set(1 if redis_up else 0)
        return generate_latest(self.registry)


class AccessMetrics:
    """Access features: tenants' usage, refusals, cache results and Redis health."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.tenant_requests = Counter("kvserve:gateway_tenant_requests", "Requests answered per tenant",
                                       ["tenant", "model"], registry=r)
        self.tokens = Counter("kvserve:gateway_tokens", "Tokens used per tenant (kind: prompt or completion)",
                              ["tenant", "model", "kind"], registry=r)
        self.refused = Counter("kvserve:gateway_refused_requests", "Requests refused by auth, limits or checks",
                               ["reason"], registry=r)
        self.cache = Counter("kvserve:gateway_cache_requests", "Response cache lookups (hit, miss, bypass)",
                             ["model", "result"], registry=r)
        self.cache_saved = Counter("kvserve:gateway_cache_saved_seconds", "Upstream time saved by cache hits",
                                   ["model"], registry=r)
        self.semantic = Counter("kvserve:gateway_semantic_cache_requests",
                                "Semantic cache lookups (hit, miss, bypass, unavailable)", ["model", "result"],
                                registry=r)
        self.semantic_saved = Counter("kvserve:gateway_semantic_cache_saved_seconds",
                                      "Upstream time saved by semantic cache hits", ["model"], registry=r)
        self.semantic_stored = Counter("kvserve:gateway_semantic_cache_stored", "Answers added to the semantic cache",
                                       ["model"], registry=r)
        self.semantic_similarity = Histogram("kvserve:gateway_semantic_cache_similarity",
                                             "Best cosine similarity found per lookup (empty partitions not counted)",
                                             ["model"], buckets=SIMILARITY_BUCKETS, registry=r)
        self.redis_errors = Counter("kvserve:gateway_redis_errors", "Redis calls that failed", ["op"], registry=r)
        self.unenforced = Counter("kvserve:gateway_limits_unenforced", "Admissions let through while Redis was down",
                                  registry=r)
        self.resumed = Counter("kvserve:gateway_streams_resumed", "Streams resumed after Last-Event-ID",
                               registry=r)
        # the children each request counts into, by label values (see `child`)
        self._tenant_requests: dict[tuple[str, ...], Counter] = {}
        self._tokens: dict[tuple[str, ...], Counter] = {}
        self._cache_results: dict[tuple[str, ...], Counter] = {}

    def usage_counted(self, tenant: str, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """One request answered for `tenant`, with the tokens it used."""
        child(self._tenant_requests, self.tenant_requests, tenant, model).inc()
        child(self._tokens, self.tokens, tenant, model, "prompt").inc(prompt_tokens)
        child(self._tokens, self.tokens, tenant, model, "completion").inc(completion_tokens)

    def cache_result(self, model: str, result: str) -> None:
        """One exact-cache lookup: hit, miss or bypass."""
        child(self._cache_results, self.cache, model, result).inc()


def child(children: dict, metric, *labels: str):
    """`metric.labels(*labels)`, kept in `children`: labels() costs more than the inc() or
    observe() a request makes on it."""
    found = children.get(labels)
    if found is None:
        found = children[labels] = metric.labels(*labels)
    return found
