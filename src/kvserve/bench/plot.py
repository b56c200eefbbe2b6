"""PNG figures of a run or a sweep, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Every figure carries a title with the run's settings (model, prompts, rate, concurrency:
`run_title`), so that a PNG shown on its own says what was measured.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kvserve.bench import metrics
from kvserve.bench.metrics import Summary
from kvserve.bench.record import RequestRecord

PERCENTILES = (("p50", 50.0, "tab:green"), ("p90", 90.0, "tab:orange"), ("p99", 99.0, "tab:red"))
TARGET_BUCKETS = 40  # about this many bars across a run
STEPS_PER_BUCKET = 10  # and never fewer steps than this in one bar (shorter ones comb between steps)


def run_title(model: str, num_prompts: int, rates: list[float], max_concurrency: int | None) -> str:
    """'model · 100 prompts · rate inf/s · concurrency 8': the settings a reader needs."""
    concurrency = "unbounded" if max_concurrency is None else str(max_concurrency)
    label = "rate" if len(rates) == 1 else "rates"
    return (f"{model} · {num_prompts} prompts · {label} {', '.join(f'{r:g}' for r in rates)}/s · "
            f"concurrency {concurrency}")


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
    """One empirical CDF per latency (ms) of the successful requests, side by side, with
    p50/p90/p99 marked."""
    fig = Figure(figsize=(14, 3.8), layout="constrained")
    for ax, (name, values) in zip(fig.subplots(1, 4), _latencies(records).items()):
        ordered = sorted(v * 1000 for v in values)
        if ordered:
            ax.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], where="post")
            _mark_percentiles(ax, ordered)
        ax.set_title(f"{name} ({len(ordered)} values)", fontsize=10)
        ax.set_xlabel(f"{name} (ms)")
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylabel("fraction of requests")
    fig.suptitle(f"latency CDFs — {title}" if title else "latency CDFs")
    return _save(fig, path)


def _mark_percentiles(ax, ordered: list[float]) -> None:
    for label, q, color in PERCENTILES:
        value = metrics.percentile(ordered, q)
        shown = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
        ax.axvline(value, color=color, linestyle="--", linewidth=1, label=f"{label} {shown} ms")
    ax.legend(fontsize=8, loc="lower right")


def bucket_seconds(records: list[RequestRecord], t0: float) -> float:
    """Bars wide enough to hold many engine steps (the median gap between a request's
    chunks is a step), and about TARGET_BUCKETS of them across the run."""
    times = [t for r in records if r.error is None for t in r.chunk_times]
    if not times:
        return 1.0
    gaps = [b - a for r in records if r.error is None for a, b in zip(r.chunk_times, r.chunk_times[1:])]
    step = statistics.median(gaps) if gaps else 0.0
    return max((max(times) - t0) / TARGET_BUCKETS, STEPS_PER_BUCKET * step, 0.01)


def tokens_per_second(records: list[RequestRecord], t0: float, path: str | Path, bucket_s: float | None = None,
                      title: str = "") -> Path:
    """Output tokens/s over the run in buckets sized from the run (bucket_seconds), with
    the run's mean as a dashed line."""
    bucket_s = bucket_s or bucket_seconds(records, t0)
    series = metrics.tokens_over_time(records, t0, bucket_s)
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax = fig.subplots()
    if series:
        times = [t for t, _ in series] + [series[-1][0] + bucket_s]
        ax.stairs([v for _, v in series], times, fill=True, alpha=0.6)
        mean = sum(v for _, v in series) * bucket_s / (times[-1] - times[0])
        ax.axhline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.1f} tok/s")
        ax.legend(fontsize=8)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel(f"output tokens/s ({bucket_s:.2g} s bars)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(f"output tokens/s over time\n{title}" if title else "output tokens/s over time", fontsize=10)
    return _save(fig, path)


def throughput_latency(rows: list[tuple[float, Summary]], path: str | Path, title: str = "") -> Path:
    """A sweep's output tokens/s against median and p99 TTFT and TPOT, one point per rate."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    x = [s.output_throughput for _, s in rows]
    for ax, name in zip(fig.subplots(1, 2), ("ttft", "tpot")):
        for stat in ("median", "p99"):
            ax.plot(x, [getattr(getattr(s, name), stat) * 1000 for _, s in rows], marker="o", label=stat)
        for (rate, s), xi in zip(rows, x):
            ax.annotate(f"{rate:g}/s", (xi, getattr(s, name).median * 1000), fontsize=8)
        ax.set_title(f"{name.upper()} against throughput", fontsize=10)
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel(f"{name.upper()} (ms)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"sweep — {title}" if title else "sweep: latency against throughput")
    return _save(fig, path)
