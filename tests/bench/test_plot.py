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
