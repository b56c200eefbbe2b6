"""The figures of kvserve.bench.metrics against a hand-computed example."""

from __future__ import annotations

import random

import numpy as np
import pytest

from kvserve.bench.metrics import parse_slo, percentile, summarize, tokens_over_time
from kvserve.bench.record import RequestRecord


def example() -> list[RequestRecord]:
    """Three successes and two failures with round timestamps (seconds)."""
    return [
        # TTFT 0.2, TPOT (0.5-0.2)/2 = 0.15, ITL 0.1 0.2, E2E 0.6
        RequestRecord(0, start=0.0, end=0.6, chunk_times=[0.2, 0.3, 0.5], prompt_tokens=10, completion_tokens=3),
        # TTFT 0.4, TPOT (1.8-1.4)/4 = 0.1, ITL 0.1 x4, E2E 0.9
        RequestRecord(1, start=1.0, end=1.9, chunk_times=[1.4, 1.5, 1.6, 1.7, 1.8], prompt_tokens=20, completion_tokens=5),
        # TTFT 0.1, no TPOT (one token), E2E 0.1
        RequestRecord(2, start=2.0, end=2.1, chunk_times=[2.1], prompt_tokens=5, completion_tokens=1),
        RequestRecord(3, start=2.5, end=2.6, error="http_503:server_error"),
        RequestRecord(4, start=3.0, end=3.5, chunk_times=[3.2], error="timeout"),
    ]


def test_counts_and_throughputs_match_hand_computation():
    s = summarize(example(), duration_s=4.0)
    assert (s.sent, s.succeeded, s.failed) == (5, 3, 2)
    assert s.errors == {"http_503:server_error": 1, "timeout": 1}
    assert (s.prompt_tokens, s.completion_tokens, s.usage_missing) == (35, 9, 0)
    assert s.request_throughput == pytest.approx(3 / 4)
    assert s.output_throughput == pytest.approx(9 / 4)
    assert s.total_token_throughput == pytest.approx(44 / 4)


def test_latency_distributions_match_hand_computation():
    s = summarize(example(), duration_s=4.0)
    # TTFT 0.1 0.2 0.4: p90 at rank 1.8 = 0.2 + 0.8 * 0.2
    assert (s.ttft.count, s.ttft.mean, s.ttft.median, s.ttft.p90, s.ttft.p99) == pytest.approx((3, 0.7 / 3, 0.2, 0.36, 0.396))
    # TPOT 0.1 0.15: p90 at rank 0.9
    assert (s.tpot.count, s.tpot.mean, s.tpot.median, s.tpot.p90, s.tpot.p99) == pytest.approx((2, 0.125, 0.125, 0.145, 0.1495))
    # ITL 0.1 x5, 0.2: p90 at rank 4.5
    assert (s.itl.count, s.itl.mean, s.itl.median, s.itl.p90, s.itl.p99) == pytest.approx((6, 0.7 / 6, 0.1, 0.15, 0.195))
    # E2E 0.1 0.6 0.9 (failed requests excluded)
    assert (s.e2e.count, s.e2e.mean, s.e2e.median, s.e2e.p90, s.e2e.p99) == pytest.approx((3, 1.6 / 3, 0.6, 0.84, 0.894))


def test_goodput_counts_requests_meeting_every_threshold():
    s = summarize(example(), 4.0, parse_slo("ttft=0.3,tpot=0.12"))
    # request 0 misses TPOT, request 1 misses TTFT, request 2 has no TPOT and meets TTFT
    assert (s.good_requests, s.goodput) == (1, pytest.approx(0.25))
    s = summarize(example(), 4.0, parse_slo("e2e=0.7"))
    assert (s.good_requests, s.goodput) == (2, pytest.approx(0.5))
    assert summarize(example(), 4.0).goodput is None


def test_missing_usage_falls_back_to_chunk_count_and_is_reported():
    record = RequestRecord(0, start=0.0, end=1.0, chunk_times=[0.25, 0.5, 0.75])
    s = summarize([record], 1.0)
    assert (s.completion_tokens, s.prompt_tokens, s.usage_missing) == (3, 0, 1)
    assert s.tpot.mean == pytest.approx(0.25)


def test_percentile_agrees_with_numpy_linear_interpolation():
    rng = random.Random(0)
    values = [rng.expovariate(3.0) for _ in range(101)]
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 50) == 0.0


def test_empty_run_has_zero_figures():
    s = summarize([], 0.0)
    assert (s.sent, s.request_throughput, s.ttft.count, s.e2e.p99) == (0, 0.0, 0, 0.0)


def test_parse_slo_rejects_unknown_keys_and_bad_values():
    assert parse_slo("ttft=0.5, tpot=0.05") == {"ttft": 0.5, "tpot": 0.05}
    assert parse_slo("") == {}
    for bad in ("latency=1", "ttft", "ttft=-1", "ttft=abc"):
        with pytest.raises(ValueError):
            parse_slo(bad)


def test_tokens_over_time_spreads_each_request_over_its_chunks():
    records = example()
    assert tokens_over_time(records, t0=0.0, bucket_s=1.0) == [(0.0, 3.0), (1.0, 5.0), (2.0, 1.0)]
    records[0].completion_tokens = 6  # 3 chunks carrying 2 tokens each
    assert tokens_over_time(records, t0=0.0, bucket_s=0.5) == [(0.0, 8.0), (0.5, 4.0), (1.0, 2.0), (1.5, 8.0), (2.0, 2.0)]
