"""The gateway's Prometheus metrics (its own registry: no process-wide state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
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

    def request_done(self, model: str, version: str, endpoint: str, status: int,
                     duration: float, ttft: float | None) -> None:
        self.requests.labels(model, version, endpoint, str(status)).inc()
        self.latency.labels(model, version, endpoint).observe(duration)
        if ttft is not None:
            self.ttft.labels(model, version, endpoint).observe(ttft)

    def breaker_changed(self, endpoint: str, state: str) -> None:
        self.breaker_changes.labels(endpoint, state).inc()
        self.breaker_state.labels(endpoint).set(BREAKER_STATES[state])

    def render(self, in_flight: dict[str, int]) -> bytes:
        for endpoint, count in in_flight.items():
            self.in_flight.labels(endpoint).set(count)
        return generate_latest(self.registry)
