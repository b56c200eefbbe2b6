"""The gateway's Prometheus metrics (its own registry: no process-wide state)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from kvserve.gateway.output_metrics import OutputMetrics

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
SIMILARITY_BUCKETS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class GatewayMetrics:
    """Requests, latency and time to first token by model, version, endpoint and status;
    retries, breaker state changes, routing decisions and shed requests."""

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
        self.access = AccessMetrics(r)
        self.output = OutputMetrics(r)  # redaction, audit, shadow traffic

        # labelled children by label values: labels() costs more than the update itself
        self._per_request: dict[tuple[str, str, str], tuple[Any, Any, dict[int, Any]]] = {}
        self._routed: dict[tuple[str, str, str, str], Any] = {}

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

    def route_decided(self, model: str, version: str, policy: str, endpoint: str) -> None:
        key = (model, version, policy, endpoint)
        child = self._routed.get(key)
        if child is None:
            child = self._routed[key] = self.routed.labels(*key)
        child.inc()

    def breaker_changed(self, endpoint: str, state: str) -> None:
        self.breaker_changes.labels(endpoint, state).inc()
        self.breaker_state.labels(endpoint).set(BREAKER_STATES[state])

    def render(self, in_flight: dict[str, int]) -> bytes:
        for endpoint, count in in_flight.items():
            self.in_flight.labels(endpoint).set(count)
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
