"""PNG figures: written, readable, of the expected layout."""

from __future__ import annotations

import math

from matplotlib.image import imread

from kvserve.bench import plot
from kvserve.bench.metrics import summarize
from tests.bench.test_metrics import example


def _size(path):
    pixels = imread(path)
    return pixels.shape[1], pixels.shape[0]


def test_latency_cdfs_png(tmp_path):
    path = plot.latency_cdfs(example(), tmp_path / "cdf.png")
    width, height = _size(path)
    assert width > 3 * height  # four panels side by side


def test_tokens_per_second_png(tmp_path):
    path = plot.tokens_per_second(example(), 0.0, tmp_path / "tps.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and _size(path)[0] > 0


def test_throughput_latency_png_for_a_sweep(tmp_path):
    rows = [(1.0, summarize(example(), 8.0)), (math.inf, summarize(example(), 4.0))]
    path = plot.throughput_latency(rows, tmp_path / "sweep.png")
    width, height = _size(path)
    assert width > height


def test_plots_of_a_run_with_no_successes_still_render(tmp_path):
    failed = [r for r in example() if r.error]
    assert plot.latency_cdfs(failed, tmp_path / "a.png").stat().st_size > 0
    assert plot.tokens_per_second(failed, 0.0, tmp_path / "b.png").stat().st_size > 0


def steady_run(rate_tok_s: float = 99.7, step_s: float = 0.11, seconds: float = 20.0, streams: int = 8):
    """`streams` requests that each get one token every `step_s`, together about `rate_tok_s`."""
    from kvserve.bench.record import RequestRecord

    per_stream = rate_tok_s / streams
    records = []
    for i in range(streams):
        count = int(seconds * per_stream)
        times = [0.05 + step_s * int(k / per_stream / step_s) + 0.001 * i for k in range(count)]
        records.append(RequestRecord(i, start=0.0, end=times[-1], chunk_times=times, prompt_tokens=10,
                                     completion_tokens=count))
    return records


def test_tokens_per_second_bars_hold_many_steps_so_a_steady_run_looks_steady(tmp_path):
    from kvserve.bench.metrics import tokens_over_time

    records = steady_run()
    bucket = plot.bucket_seconds(records, 0.0)
    assert bucket >= 10 * 0.11 * 0.99  # ten steps a bar, not a comb of 0.11 s bars
    rates = [v for _, v in tokens_over_time(records, 0.0, bucket)][1:-1]  # whole bars only
    assert all(80 < v < 120 for v in rates), rates  # the 99.7 tok/s run reads as ~100, not 180-350
    assert plot.tokens_per_second(records, 0.0, tmp_path / "steady.png", title="t").stat().st_size > 0


def test_titles_carry_the_run_settings():
    assert plot.run_title("tiny", 100, [math.inf], 8) == "tiny · 100 prompts · rate inf/s · concurrency 8"
    assert plot.run_title("tiny", 50, [1, 2.5], None) == "tiny · 50 prompts · rates 1, 2.5/s · concurrency unbounded"
