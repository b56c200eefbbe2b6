"""How a run's figures are shown: a terminal table, sweep lines and a JSON result file."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from kvserve import __version__
from kvserve.bench import metrics
from kvserve.bench.metrics import Distribution, Summary
from kvserve.bench.record import RequestRecord

LATENCIES = ("ttft", "tpot", "itl", "e2e")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def _latency_rows(summary: Summary) -> list[str]:
    rows = [f"{'latency (ms)':<14}{'mean':>10}{'median':>10}{'p90':>10}{'p99':>10}{'n':>8}"]
    for name in LATENCIES:
        d: Distribution = getattr(summary, name)
        rows.append(f"{name.upper():<14}{_ms(d.mean):>10}{_ms(d.median):>10}{_ms(d.p90):>10}{_ms(d.p99):>10}{d.count:>8}")
    return rows


def format_table(summary: Summary, title: str = "serving benchmark") -> str:
    """The run's figures as a block of aligned text for the terminal."""
    s = summary
    errors = ", ".join(f"{k}={v}" for k, v in sorted(s.errors.items())) or "none"
    lines = [
        f"==== {title} ====",
        f"{'requests sent / succeeded / failed':<46}{s.sent} / {s.succeeded} / {s.failed}",
        f"{'errors':<46}{errors}",
        f"{'duration (s)':<46}{s.duration_s:.2f}",
        f"{'prompt / completion tokens':<46}{s.prompt_tokens} / {s.completion_tokens}",
        f"{'request throughput (req/s)':<46}{s.request_throughput:.2f}",
        f"{'output token throughput (tok/s)':<46}{s.output_throughput:.2f}",
        f"{'total token throughput (tok/s)':<46}{s.total_token_throughput:.2f}",
    ]
    if s.usage_missing:
        lines.append(f"{'no usage reported (chunks counted)':<46}{s.usage_missing} requests")
    if s.goodput is not None:
        slo = ",".join(f"{k}<={v:g}s" for k, v in s.slo.items())
        lines.append(f"{f'goodput (req/s) [{slo}]':<46}{s.goodput:.2f} ({s.good_requests} of {s.succeeded} met it)")
    return "\n".join(lines + _latency_rows(s))


SWEEP_HEADER = (
    f"{'rate':>8}{'ok/sent':>11}{'req/s':>8}{'out tok/s':>11}{'TTFT p50':>10}{'TTFT p99':>10}"
    f"{'TPOT p50':>10}{'TPOT p99':>10}{'E2E p50':>10}{'goodput':>9}"
)


def sweep_line(rate: float, s: Summary) -> str:
    """One aligned line of `kvserve bench sweep` (latencies in ms), under SWEEP_HEADER."""
    goodput = f"{s.goodput:.2f}" if s.goodput is not None else "-"
    return (
        f"{rate:>8g}{f'{s.succeeded}/{s.sent}':>11}{s.request_throughput:>8.2f}{s.output_throughput:>11.1f}"
        f"{_ms(s.ttft.median):>10}{_ms(s.ttft.p99):>10}{_ms(s.tpot.median):>10}{_ms(s.tpot.p99):>10}"
        f"{_ms(s.e2e.median):>10}{goodput:>9}"
    )


def request_rows(records: list[RequestRecord]) -> list[dict]:
    """Per-request figures for the JSON file (seconds; raw chunk times are left out)."""
    return [
        {
            "index": r.index,
            "tenant": r.tenant,
            "error": r.error,
            "error_message": r.error_message or None,
            "sized_prompt_len": r.prompt_len,
            "max_tokens": r.output_len,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "ttft_s": metrics.ttft(r),
            "tpot_s": metrics.tpot(r),
            "e2e_s": metrics.e2e(r),
        }
        for r in records
    ]


def _finite(value):
    """JSON has no infinity: write `inf` rates as the string "inf"."""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def result_document(settings: dict, **sections) -> dict:
    """The JSON result: version, date, the settings of the run, then the given sections."""
    doc = {"kvserve_version": __version__, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings}
    return _finite({**doc, **sections})


def write_json(path: str | Path, document: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path
