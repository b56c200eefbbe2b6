"""Reading vLLM metric names from /metrics."""

from __future__ import annotations

import asyncio

from kvserve.gateway.config import BreakerConfig, EndpointConfig
from kvserve.gateway.fleet.breaker import CircuitBreaker
from kvserve.gateway.fleet.endpoints import Endpoint
from kvserve.gateway.fleet.scrape import parse_metrics, scrape
from kvserve.gateway.fleet.upstream import UpstreamClient

VLLM_TEXT = b"""# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen3-8B"} 3.0
vllm:num_requests_running{engine="1",model_name="Qwen/Qwen3-8B"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen3-8B"} 7.0
vllm:num_requests_waiting{engine="1",model_name="Qwen/Qwen3-8B"} 1.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-8B"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="Qwen/Qwen3-8B"} 0.25
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{reason="capacity"} 99
vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="Qwen/Qwen3-8B"} 0.0
kvserve:num_requests_waiting 42
"""


def test_gauges_are_summed_over_engines_and_kv_usage_averaged():
    stats = parse_metrics(VLLM_TEXT, now=12.5, in_flight=4)
    assert (stats.running, stats.waiting, stats.kv_usage) == (5.0, 8.0, 0.375)
    assert (stats.scraped_at, stats.in_flight_at_scrape) == (12.5, 4)


def test_older_vllm_kv_name_and_missing_kv_are_understood():
    old = b"vllm:num_requests_waiting 2\nvllm:num_requests_running 1\nvllm:gpu_cache_usage_perc 0.9\n"
    assert parse_metrics(old, 0, 0).kv_usage == 0.9
    assert parse_metrics(b"vllm:num_requests_running 1\n", 0, 0).kv_usage is None


def test_a_server_without_vllm_metrics_gives_no_stats():
    assert parse_metrics(b"process_cpu_seconds_total 3\nkvserve:num_requests_waiting 4\n", 0, 0) is None
    assert parse_metrics(b"", 0, 0) is None


def test_scrape_of_a_real_fake_upstream(upstream):
    server = upstream()
    endpoint = Endpoint(EndpointConfig(url=server.url), CircuitBreaker(BreakerConfig()))

    async def main():
        client = UpstreamClient()
        stats = await scrape(client, endpoint, "/metrics", 1.0, now=3.0)
        await client.close()
        return stats

    stats = asyncio.run(main())
    assert (stats.running, stats.waiting, stats.kv_usage, stats.scraped_at) == (0, 0, 0.0, 3.0)
