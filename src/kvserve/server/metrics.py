"""Prometheus metrics of `kvserve serve`, exported twice: under `kvserve:` names and under
the names vLLM uses (`vllm:`), so that dashboards, the Gateway API Inference Extension and
the kvserve gateway read a kvserve replica exactly as they read a vLLM one.

Every metric carries the label `model_name`. The engine's gauges and cumulative counters
are refreshed from the core's latest stats snapshot when /metrics is scraped; request
latencies are observed by the frontend as tokens reach it. docs/server.md lists them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from kvserve.engine import EngineStats
from kvserve.engine import SpecStats

PREFIXES = ("kvserve:", "vllm:")

# no `*_created` series: they double the payload and no dashboard of ours or vLLM's reads them
disable_created_metrics()

# seconds; fine at the low end (ms-scale steps on a GPU) and long-tailed for CPU runs
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
                   1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0)
E2E_BUCKETS = (0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0,
               240.0, 480.0, 960.0, 1920.0)
# label values known in advance: their series start at zero, so rates and alerts see them at once
FINISH_REASONS = ("stop", "length", "abort")
REJECT_REASONS = ("queue_full", "invalid", "engine_dead", "shutdown", "timeout")
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)

# name (after the prefix) -> extra vLLM-only names for the same series (older dashboards)
VLLM_ALIASES = {
    "kv_cache_usage_perc": ["vllm:gpu_cache_usage_perc"],
    "inter_token_latency_seconds": ["vllm:time_per_output_token_seconds"],
}


class _Aliases(Collector):
    """Exports one metric under several names: it is updated once per event, whatever the
    number of names (a token costs one histogram observation, not three)."""

    def __init__(self, metric: MetricWrapperBase, names: list[str]) -> None:
        self._metric = metric
        self._names = names

    def collect(self) -> Iterable[Metric]:
        for family in self._metric.collect():
            for name in self._names:
                alias = Metric(name, family.documentation, family.type, family.unit)
                alias.samples = [s._replace(name=name + s.name[len(family.name):]) for s in family.samples]
                yield alias


class _Family:
    """A metric exported under every prefix (and aliases), bound to one model name."""

    def __init__(self, registry: CollectorRegistry, model_name: str, kind: type, name: str,
                 doc: str, labels: Iterable[str] = (), prefixes: tuple[str, ...] = PREFIXES,
                 **kwargs: object) -> None:
        names = [prefix + name for prefix in prefixes] + (VLLM_ALIASES.get(name, []) if "vllm:" in prefixes else [])
        self._metric = kind(names[0], doc, ["model_name", *labels], registry=None, **kwargs)
        registry.register(_Aliases(self._metric, names))
        self._model_name = model_name

    def labels(self, *values: str) -> Any:
        return self._metric.labels(self._model_name, *values)


@dataclass
class RequestRecord:
    """The numbers of one finished (or aborted) API request."""

    prompt_tokens: int
    completion_tokens: int
    finish_reasons: list[str]
    e2e_s: float
    queue_s: float | None


class ServerMetrics:
    """The server's registry. Not a singleton: each app builds its own."""

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._last: EngineStats | None = None

        def family(kind: type, name: str, doc: str, labels: Iterable[str] = (), **kw: object) -> _Family:
            return _Family(self.registry, model_name, kind, name, doc, labels, **kw)

        self.running = family(Gauge, "num_requests_running", "Requests in the engine's running batch.").labels()
        self.waiting = family(Gauge, "num_requests_waiting", "Requests waiting to be scheduled.").labels()
        self.kv_usage = family(Gauge, "kv_cache_usage_perc", "KV cache blocks in use, as a fraction (0..1).").labels()
        self.prefix_queries = family(Counter, "prefix_cache_queries", "Prompt tokens looked up in the prefix cache.").labels()
        self.prefix_hits = family(Counter, "prefix_cache_hits", "Prompt tokens found in the prefix cache.").labels()
        self.preemptions = family(Counter, "num_preemptions", "Requests preempted (recomputed later).").labels()
        self.steps = family(Counter, "engine_steps", "Engine steps run.", prefixes=("kvserve:",)).labels()
        self.step_seconds = family(Counter, "engine_step_seconds", "Wall time the engine loop spent in steps.",
                                   prefixes=("kvserve:",)).labels()
        self.prompt_tokens = family(Counter, "prompt_tokens", "Prompt tokens of requests admitted.").labels()
        self.generation_tokens = family(Counter, "generation_tokens", "Tokens generated.").labels()
        self._success = family(Counter, "request_success", "Requests finished, by finish reason.", ["finished_reason"])
        self.ttft = family(Histogram, "time_to_first_token_seconds", "Arrival to first token.",
                           buckets=LATENCY_BUCKETS).labels()
        self.itl = family(Histogram, "inter_token_latency_seconds", "Time between two tokens of a request.",
                          buckets=LATENCY_BUCKETS).labels()
        self.e2e = family(Histogram, "e2e_request_latency_seconds", "Arrival to last token.",
                          buckets=E2E_BUCKETS).labels()
        self.queue = family(Histogram, "request_queue_time_seconds", "Arrival to first scheduled.",
                            buckets=E2E_BUCKETS).labels()
        self.req_prompt = family(Histogram, "request_prompt_tokens", "Prompt tokens per request.",
                                 buckets=TOKEN_BUCKETS).labels()
        self.req_generation = family(Histogram, "request_generation_tokens", "Generated tokens per request.",
                                     buckets=TOKEN_BUCKETS).labels()
        self._rejected = family(Counter, "request_rejected", "Requests refused or ended early, by reason.",
                                ["reason"], prefixes=("kvserve:",))
        for reason in FINISH_REASONS:
            self._success.labels(reason)
        for reason in REJECT_REASONS:
            self._rejected.labels(reason)
        self.spec = SpecDecodeMetrics(family)

    def update_engine(self, stats: EngineStats) -> None:
        """Gauges from the latest snapshot; cumulative engine counters advanced by the difference."""
        self.running.set(stats.num_running)
        self.waiting.set(stats.num_waiting)
        self.kv_usage.set(stats.kv_cache_usage)
        last = self._last
        if last is not None and stats.num_steps < last.num_steps:
            last = None  # another engine (a hot swap): its counters start again from zero
        self.prefix_queries.inc(max(0, stats.prefix_cache_queries - (last.prefix_cache_queries if last else 0)))
        self.prefix_hits.inc(max(0, stats.prefix_cache_hits - (last.prefix_cache_hits if last else 0)))
        self.preemptions.inc(max(0, stats.num_preemptions - (last.num_preemptions if last else 0)))
        self.steps.inc(max(0, stats.num_steps - (last.num_steps if last else 0)))
        self.step_seconds.inc(max(0.0, stats.step_seconds - (last.step_seconds if last else 0.0)))
        if stats.spec_decode is not None:
            self.spec.update(stats.spec_decode, last.spec_decode if last else None)
        self._last = stats

    def request_finished(self, record: RequestRecord) -> None:
        for reason in record.finish_reasons:
            self._success.labels(reason).inc()
        self.e2e.observe(record.e2e_s)
        if record.queue_s is not None:
            self.queue.observe(max(0.0, record.queue_s))
        self.req_prompt.observe(record.prompt_tokens)
        self.req_generation.observe(record.completion_tokens)

    def request_rejected(self, reason: str) -> None:
        self._rejected.labels(reason).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class SpecDecodeMetrics:
    """Speculative decoding's acceptance counters (vLLM's spec_decode_* names); they stay
    at zero when speculation is off."""

    def __init__(self, family) -> None:
        self.drafts = family(Counter, "spec_decode_num_drafts", "Proposals verified (one per request and step).").labels()
        self.draft_tokens = family(Counter, "spec_decode_num_draft_tokens", "Speculative tokens proposed.").labels()
        self.accepted = family(Counter, "spec_decode_num_accepted_tokens", "Speculative tokens accepted.").labels()
        self._per_pos = family(Counter, "spec_decode_num_accepted_tokens_per_pos",
                               "Speculative tokens accepted, by position in the proposal.", ["position"])

    def update(self, now: SpecStats, before: SpecStats | None) -> None:
        self.drafts.inc(max(0, now.num_drafts - (before.num_drafts if before else 0)))
        self.draft_tokens.inc(max(0, now.num_draft_tokens - (before.num_draft_tokens if before else 0)))
        self.accepted.inc(max(0, now.num_accepted_tokens - (before.num_accepted_tokens if before else 0)))
        for pos, count in enumerate(now.accepted_per_pos):
            earlier = before.accepted_per_pos[pos] if before and pos < len(before.accepted_per_pos) else 0
            self._per_pos.labels(str(pos)).inc(max(0, count - earlier))


class RequestTimer:
    """Per-request latency bookkeeping: TTFT once, inter-token gaps per choice."""

    def __init__(self, metrics: ServerMetrics, arrival: float) -> None:
        self.metrics = metrics
        self.arrival = arrival  # time.monotonic() at arrival
        self.first_token: float | None = None
        self._last: dict[int, float] = {}

    def on_tokens(self, index: int, num_tokens: int, now: float) -> None:
        if num_tokens == 0:
            return
        self.metrics.generation_tokens.inc(num_tokens)
        last = self._last.get(index)
        if self.first_token is None:
            self.first_token = now
            self.metrics.ttft.observe(now - self.arrival)
        elif last is not None:
            self.metrics.itl.observe((now - last) / num_tokens)
        self._last[index] = now
