"""Gateway metrics render with their documented names."""

from __future__ import annotations

from pathlib import Path

from kvserve.gateway.metrics import GatewayMetrics
from kvserve.gateway.store import memory_metrics
from kvserve.gateway.store.kvstore import MemoryStore

DOCS = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"


def test_documented_metrics_exist_and_count():
    metrics = GatewayMetrics()
    memory_metrics.register(metrics.registry, MemoryStore(10))  # the gateway's state adds the store's
    metrics.request_done("m", "v1", "http://e:1", 200, 0.5, 0.01)
    metrics.breaker_changed("http://e:1", "open")
    metrics.retries.labels("m", "v1", "connect").inc()
    text = metrics.render({"http://e:1": 3}, redis_up=True).decode()  # a gateway with Redis: every metric
    assert 'kvserve:gateway_requests_total{endpoint="http://e:1",model="m",status="200",version="v1"} 1.0' in text
    assert 'kvserve:gateway_breaker_state{endpoint="http://e:1"} 2.0' in text
    assert 'kvserve:gateway_in_flight_requests{endpoint="http://e:1"} 3.0' in text
    assert 'kvserve:gateway_time_to_first_token_seconds_bucket{endpoint="http://e:1",le="0.01"' in text
    for line in DOCS.read_text().splitlines():
        if line.startswith("| `kvserve:gateway_"):
            name = line.split("`")[1].removesuffix("_total")
            assert f"# TYPE {name}" in text, name


def test_two_gateways_in_one_process_do_not_share_metrics():
    a, b = GatewayMetrics(), GatewayMetrics()
    a.request_done("m", "v", "e", 200, 1, None)
    assert b"gateway_requests_total{" not in b.render({})
