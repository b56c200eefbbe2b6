"""PNG figures of a run or a sweep, drawn with matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kvserve.bench import metrics
from kvserve.bench.metrics import Summary
from kvserve.bench.record import RequestRecord


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(path))
    return path


def _latencies(records: list[RequestRecord]) -> dict[str, list[float]]:
    ok = [r for r in records if r.error is None]
    return {
        "TTFT": [t for t in map(metrics.ttft, ok) if t is not None],
        "TPOT": [t for t in map(metrics.tpot, ok) if t is not None],
        "ITL": [gap for r in ok for gap in metrics.itls(r)],
        "E2E": [metrics.e2e(r) for r in ok],
    }


def latency_cdfs(records: list[RequestRecord], path: str | Path, title: str = "") -> Path:
    """One empirical CDF per latency (ms) of the successful requests, side by side."""
    fig = Figure(figsize=(14, 3.6), layout="constrained")
    for ax, (name, values) in zip(fig.subplots(1, 4), _latencies(records).items()):
        ordered = sorted(v * 1000 for v in values)
        if ordered:
            ax.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], where="post")
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylabel("fraction of requests")
    fig.suptitle(title or "latency CDFs")
    return _save(fig, path)


def tokens_per_second(records: list[RequestRecord], t0: float, path: str | Path, bucket_s: float | None = None) -> Path:
    """Output tokens/s over the run, in buckets of `bucket_s` seconds (default: about 60 buckets)."""
    if bucket_s is None:
        last = max((t for r in records for t in r.chunk_times), default=t0)
        bucket_s = max(0.05, round((last - t0) / 60, 2))
    series = metrics.tokens_over_time(records, t0, bucket_s)
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.subplots()
    if series:
        times = [t for t, _ in series] + [series[-1][0] + bucket_s]
        ax.stairs([v for _, v in series], times, fill=True, alpha=0.6)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel(f"output tokens/s ({bucket_s:g} s buckets)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def throughput_latency(rows: list[tuple[float, Summary]], path: str | Path) -> Path:
    """A sweep's output tokens/s against median and p99 TTFT and TPOT, one point per rate."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    x = [s.output_throughput for _, s in rows]
    for ax, name in zip(fig.subplots(1, 2), ("ttft", "tpot")):
        for stat in ("median", "p99"):
            ax.plot(x, [getattr(getattr(s, name), stat) * 1000 for _, s in rows], marker="o", label=stat)
        for (rate, s), xi in zip(rows, x):
            ax.annotate(f"{rate:g}/s", (xi, getattr(s, name).median * 1000), fontsize=8)
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel(f"{name.upper()} (ms)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)
