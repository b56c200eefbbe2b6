"""The load runner against a real fake-upstream process: counts, concurrency, schedule, stops."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

from kvserve.bench.arrivals import arrival_offsets
from kvserve.bench.client import Target
from kvserve.bench.datasets import DatasetConfig, load_samples
from kvserve.bench.metrics import summarize
from kvserve.bench.serve import LoadConfig, RunResult, run_load
from kvserve.bench.tokens import WordCounter


def samples(n: int, output_len: int = 8):
    return load_samples(DatasetConfig("random", num_prompts=n, input_len=16, output_len=output_len), WordCounter())


def run(url: str, n: int, stop_after: float | None = None, **load) -> RunResult:
    async def go() -> RunResult:
        stop = asyncio.Event()
        if stop_after is not None:
            asyncio.get_running_loop().call_later(stop_after, stop.set)
        return await run_load(Target(url, "m"), samples(n), LoadConfig(progress=False, **load), stop)

    return asyncio.run(go())


def max_overlap(result: RunResult) -> int:
    events = sorted([(r.start, 1) for r in result.records] + [(r.end, -1) for r in result.records])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def test_sent_equals_succeeded_plus_failed_and_tokens_come_from_usage(fake_upstream):
    url = fake_upstream("--fail-rate", "0.3", "--num-tokens", "8", "--tokens-per-second", "0")
    result = run(url, 40, max_concurrency=8)
    s = summarize(result.records, result.duration_s)
    assert s.sent == 40 == s.succeeded + s.failed and not result.interrupted
    assert 0 < s.failed < 40 and set(s.errors) == {"http_503:server_error"}
    assert s.completion_tokens == 8 * s.succeeded and s.usage_missing == 0
    assert [r.index for r in result.records] == list(range(40))


def test_max_concurrency_bounds_requests_in_flight(steady_upstream):
    result = run(steady_upstream, 15, max_concurrency=3)
    assert len(result.records) == 15 and all(r.error is None for r in result.records)
    assert max_overlap(result) == 3


def test_requests_leave_on_the_arrival_schedule(steady_upstream):
    result = run(steady_upstream, 20, request_rate=25.0, seed=4)
    offsets = arrival_offsets(20, 25.0, seed=4)
    lags = [r.start - result.t0 - offset for r, offset in zip(result.records, offsets)]
    assert all(-0.001 <= lag < 0.25 for lag in lags), lags


def test_duration_stops_sending_and_lets_requests_in_flight_finish(steady_upstream):
    result = run(steady_upstream, 1000, request_rate=40.0, duration_s=0.5)
    assert 5 <= len(result.records) <= 45
    assert all(r.start - result.t0 < 0.5 and r.error is None for r in result.records)
    assert not result.interrupted


def test_stop_cancels_requests_in_flight_and_keeps_their_records(fake_upstream):
    url = fake_upstream("--num-tokens", "100", "--tokens-per-second", "10")  # 10 s per answer
    began = time.perf_counter()
    result = run(url, 50, stop_after=0.5, request_rate=20.0)
    assert time.perf_counter() - began < 3.0 and result.interrupted
    assert 3 <= len(result.records) < 50
    assert {r.error for r in result.records} == {"cancelled"}
    assert all(len(r.chunk_times) >= 1 for r in result.records[:3])  # measured up to the stop


def test_ctrl_c_prints_what_was_measured_and_writes_the_result(fake_upstream, tmp_path):
    url = fake_upstream("--num-tokens", "4", "--tokens-per-second", "4")  # about 0.75 s per answer
    result_file = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "kvserve.cli.main", "bench", "serve", "--base-url", url, "--model", "m",
           "--num-prompts", "500", "--request-rate", "10", "--input-len", "8", "--result-file", str(result_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in out and "TTFT" in out
    doc = json.loads(result_file.read_text())
    summary = doc["summary"]
    assert doc["interrupted"] is True and summary["sent"] == summary["succeeded"] + summary["failed"]
    assert summary["succeeded"] >= 5 and summary["errors"].get("cancelled", 0) >= 1
    assert summary["completion_tokens"] == 4 * summary["succeeded"]
