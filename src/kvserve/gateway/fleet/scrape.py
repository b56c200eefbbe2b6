"""Reading an endpoint's load from its Prometheus /metrics (vLLM metric names)."""

from __future__ import annotations

import re

from kvserve.gateway.fleet.endpoints import Endpoint
from kvserve.gateway.fleet.upstream import UpstreamClient, within
from kvserve.gateway.routing.stats import EngineStats

WAITING = b"vllm:num_requests_waiting"
RUNNING = b"vllm:num_requests_running"
KV_USAGE = (b"vllm:kv_cache_usage_perc", b"vllm:gpu_cache_usage_perc")  # current name, pre-v1 name
GENERATED, PREFIX_HITS, PREFIX_QUERIES = (b"vllm:generation_tokens_total", b"vllm:prefix_cache_hits_total",
                                          b"vllm:prefix_cache_queries_total")

# `name{labels} value` lines of the gauges; compiled once, scanned in C
_SAMPLE = re.compile(
    rb"^(vllm:num_requests_waiting|vllm:num_requests_running|vllm:kv_cache_usage_perc|vllm:gpu_cache_usage_perc"
    rb"|vllm:generation_tokens_total|vllm:prefix_cache_hits_total|vllm:prefix_cache_queries_total)"
    rb"(?:\{[^}\n]*\})?[ \t]+([^ \t\n]+)",
    re.MULTILINE,
)


def parse_metrics(text: bytes, now: float, in_flight: int) -> EngineStats | None:
    """The gauges and counters summed over label sets (KV usage averaged); None when the text has
    neither queue gauge, i.e. the server does not export vLLM's metrics."""
    sums: dict[bytes, float] = {}
    counts: dict[bytes, int] = {}
    for match in _SAMPLE.finditer(text):
        name = match.group(1)
        try:
            value = float(match.group(2))
        except ValueError:
            continue
        sums[name] = sums.get(name, 0.0) + value
        counts[name] = counts.get(name, 0) + 1
    if WAITING not in sums and RUNNING not in sums:
        return None
    kv_name = next((n for n in KV_USAGE if n in sums), None)
    kv = None if kv_name is None else sums[kv_name] / counts[kv_name]
    return EngineStats(sums.get(WAITING, 0.0), sums.get(RUNNING, 0.0), kv, now, in_flight,
                       sums.get(GENERATED), sums.get(PREFIX_HITS), sums.get(PREFIX_QUERIES))


async def get(client: UpstreamClient, endpoint: Endpoint, path: str, timeout_s: float) -> tuple[int, bytes]:
    """GET a small resource of an endpoint: (status, body). Raises OSError/TimeoutError."""

    async def exchange() -> tuple[int, bytes]:
        response = await client.request(endpoint.origin, "GET", endpoint.base_path + path, {}, b"", timeout_s)
        try:
            body = await response.read_all()
        except BaseException:
            response.close()
            raise
        response.release()
        return response.status, body

    return await within(timeout_s, exchange())


async def scrape(client: UpstreamClient, endpoint: Endpoint, path: str, timeout_s: float,
                 now: float) -> EngineStats | None:
    """One scrape (stamped `now`); None on a non-200 answer. Raises OSError/TimeoutError."""
    in_flight = endpoint.in_flight
    status, body = await get(client, endpoint, path, timeout_s)
    return parse_metrics(body, now, in_flight) if status == 200 else None
