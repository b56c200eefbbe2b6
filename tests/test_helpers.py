"""The shared test helpers read /metrics pages and processes as the tests rely on."""

from __future__ import annotations

import sys

import pytest

from tests.helpers import Metrics, ServerProcess, free_port

PAGE = """# HELP vllm:request_success_total Finished requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{finished_reason="stop",model_name="tiny"} 3.0
vllm:request_success_total{finished_reason="abort",model_name="tiny"} 2.0
# HELP kvserve:gateway_requests_total Requests.
# TYPE kvserve:gateway_requests_total counter
kvserve:gateway_requests_total{endpoint="http://127.0.0.1:8000",model="fake",status="200"} 1.0
# HELP vllm:kv_cache_usage_perc KV usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc 0.25
"""


def test_metrics_sum_over_labels_or_over_the_labels_asked_for():
    metrics = Metrics(PAGE)
    assert metrics["vllm:request_success_total"] == 5
    assert metrics.value("vllm:request_success_total", finished_reason="abort") == 2
    assert metrics.value("kvserve:gateway_requests_total", endpoint="http://127.0.0.1:8000", status="200") == 1
    assert metrics.value("kvserve:gateway_requests_total", status="500") == 0
    assert metrics["vllm:kv_cache_usage_perc"] == 0.25


def test_a_series_the_page_lacks_is_a_key_error_or_the_default():
    metrics = Metrics(PAGE)
    with pytest.raises(KeyError):
        metrics["vllm:num_requests_running"]
    assert metrics.get("vllm:num_requests_running", 7.0) == 7.0


def test_a_server_that_exits_before_it_is_ready_fails_with_its_output(tmp_path):
    port = free_port()
    command = [sys.executable, "-c", "import sys; print('bad flag --portt'); sys.exit(3)"]
    server = ServerProcess(command, port, tmp_path / "log")
    with pytest.raises(RuntimeError, match="exited with 3(.|\n)*bad flag --portt"):
        server.start(timeout=30)
    assert server.stop() == 3
