"""Metric names: every kvserve: series has its vllm: twin, and docs/server.md lists them all."""

from __future__ import annotations

from pathlib import Path

from kvserve.engine.outputs import EngineStats
from kvserve.server.metrics import RequestRecord, RequestTimer, ServerMetrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "server.md"
KVSERVE_ONLY = {"kvserve:request_rejected", "kvserve:engine_steps", "kvserve:engine_step_seconds"}


def _families(metrics: ServerMetrics) -> set[str]:
    return {family.name for family in metrics.registry.collect()}


def _value(metrics: ServerMetrics, sample_name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(sample_name, {"model_name": "m", **labels})
    return 0.0 if value is None else value


def test_every_kvserve_metric_is_also_exported_under_its_vllm_name():
    names = _families(ServerMetrics("m"))
    ours = {n for n in names if n.startswith("kvserve:")} - KVSERVE_ONLY
    assert ours, names
    assert {n.replace("kvserve:", "vllm:") for n in ours} <= names
    for required in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                     "vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds",
                     "vllm:request_queue_time_seconds", "vllm:inter_token_latency_seconds",
                     "vllm:prompt_tokens", "vllm:generation_tokens", "vllm:prefix_cache_queries",
                     "vllm:prefix_cache_hits", "vllm:num_preemptions", "vllm:gpu_cache_usage_perc"):
        assert required in names


def test_docs_list_every_metric():
    text = DOCS.read_text()
    for name in _families(ServerMetrics("m")):
        assert f"`{name}" in text, f"{name} is not documented in docs/server.md"


def test_engine_counters_advance_by_the_difference_of_cumulative_snapshots():
    metrics = ServerMetrics("m")
    metrics.update_engine(EngineStats(3, 2, 0.5, 100, prefix_cache_queries=40, prefix_cache_hits=16, num_preemptions=1,
                                      num_steps=7, step_seconds=0.5))
    metrics.update_engine(EngineStats(1, 0, 0.25, 100, prefix_cache_queries=50, prefix_cache_hits=32, num_preemptions=1,
                                      num_steps=9, step_seconds=0.75))
    assert _value(metrics, "vllm:num_requests_running") == 1
    assert _value(metrics, "vllm:kv_cache_usage_perc") == 0.25
    assert _value(metrics, "vllm:prefix_cache_queries_total") == 50
    assert _value(metrics, "kvserve:prefix_cache_hits_total") == 32
    assert _value(metrics, "vllm:num_preemptions_total") == 1
    assert _value(metrics, "kvserve:engine_steps_total") == 9
    assert _value(metrics, "kvserve:engine_step_seconds_total") == 0.75


def test_request_timer_and_record():
    metrics = ServerMetrics("m")
    timer = RequestTimer(metrics, arrival=10.0)
    timer.on_tokens(0, 1, 10.5)  # first token of choice 0: TTFT 0.5 s
    timer.on_tokens(1, 1, 10.6)  # first token of choice 1: no TTFT, no gap yet
    timer.on_tokens(0, 2, 10.7)  # two tokens 0.2 s after the last: gap 0.1 s each
    assert _value(metrics, "vllm:time_to_first_token_seconds_sum") == 0.5
    assert _value(metrics, "vllm:inter_token_latency_seconds_count") == 1
    assert abs(_value(metrics, "vllm:inter_token_latency_seconds_sum") - 0.1) < 1e-9
    assert _value(metrics, "vllm:generation_tokens_total") == 4
    metrics.request_finished(RequestRecord(12, 4, ["length", "stop"], e2e_s=0.9, queue_s=0.05))
    assert _value(metrics, "vllm:request_success_total", finished_reason="length") == 1
    assert _value(metrics, "kvserve:request_success_total", finished_reason="stop") == 1
    assert _value(metrics, "vllm:e2e_request_latency_seconds_count") == 1
    assert _value(metrics, "vllm:request_queue_time_seconds_sum") == 0.05
