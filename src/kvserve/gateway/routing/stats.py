"""What routing sees of the fleet: frozen snapshots, taken fresh for every request.

Imports nothing of the gateway, so policies, shedding and the fleet's endpoints can all
use it without depending on each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineStats:
    """One scrape of an endpoint's /metrics (vLLM metric names)."""

    waiting: float  # vllm:num_requests_waiting, summed over the server's engines
    running: float  # vllm:num_requests_running, summed
    kv_usage: float | None  # vllm:kv_cache_usage_perc (a 0..1 fraction); None if not exported
    scraped_at: float  # monotonic seconds
    in_flight_at_scrape: int  # the gateway's own open requests on the endpoint at that moment
    # counters, for the console's rates (None if not exported)
    generation_tokens: float | None = None  # vllm:generation_tokens_total
    prefix_hits: float | None = None  # vllm:prefix_cache_hits_total (tokens)
    prefix_queries: float | None = None  # vllm:prefix_cache_queries_total (tokens)


@dataclass(frozen=True)
class EndpointStats:
    """What a routing policy sees of one endpoint; taken fresh for every request."""

    url: str
    in_flight: int  # this gateway's requests open on the endpoint now
    engine: EngineStats | None  # None when never scraped or stale: unknown, not idle
