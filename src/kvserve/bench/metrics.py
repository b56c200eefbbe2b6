"""Benchmark figures as pure functions of the per-request records.

Definitions (all times in seconds):
- TTFT: first chunk carrying output minus the send time.
- TPOT: (last output chunk - first output chunk) / (completion tokens - 1), per request;
  requests with one output token have none.
- ITL: every gap between consecutive output chunks, pooled over requests.
- E2E: end of the stream minus the send time.
- throughputs: successful requests and their tokens divided by the run's duration.
- goodput: successful requests per second that met every SLO threshold given.
Percentiles interpolate linearly between order statistics (numpy's default).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from kvserve.bench.record import RequestRecord

SLO_KEYS = ("ttft", "tpot", "e2e")


@dataclass(frozen=True)
class Distribution:
    """Mean, median, p90 and p99 of a set of latencies (seconds); all 0.0 when empty."""

    count: int = 0
    mean: float = 0.0
    median: float = 0.0
    p90: float = 0.0
    p99: float = 0.0


@dataclass
class Summary:
    """The figures of one run."""

    duration_s: float  # first send to last end (or to the interruption)
    sent: int  # requests sent (= succeeded + failed)
    succeeded: int
    failed: int
    errors: dict[str, int]  # error type -> count
    prompt_tokens: int  # over successful requests, from usage
    completion_tokens: int  # over successful requests, from usage (chunk count if missing)
    usage_missing: int  # successful requests whose server reported no usage
    request_throughput: float  # successful requests / s
    output_throughput: float  # completion tokens / s
    total_token_throughput: float  # (prompt + completion) tokens / s
    ttft: Distribution
    tpot: Distribution
    itl: Distribution
    e2e: Distribution
    slo: dict[str, float] = field(default_factory=dict)  # the thresholds goodput was judged on
    good_requests: int | None = None  # successful requests meeting every SLO (None: no SLO)
    goodput: float | None = None  # good requests / s (None: no SLO)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: list[float]) -> Distribution:
    if not values:
        return Distribution()
    return Distribution(
        count=len(values),
        mean=sum(values) / len(values),
        median=percentile(values, 50),
        p90=percentile(values, 90),
        p99=percentile(values, 99),
    )


def output_tokens(r: RequestRecord) -> int:
    """Completion tokens from usage, or the number of output chunks when usage is missing."""
    return r.completion_tokens if r.completion_tokens is not None else len(r.chunk_times)


def ttft(r: RequestRecord) -> float | None:
    return r.chunk_times[0] - r.start if r.chunk_times else None


def tpot(r: RequestRecord) -> float | None:
    n = output_tokens(r)
    if n < 2 or not r.chunk_times:
        return None
    return (r.chunk_times[-1] - r.chunk_times[0]) / (n - 1)


def itls(r: RequestRecord) -> list[float]:
    return [b - a for a, b in zip(r.chunk_times, r.chunk_times[1:])]


def e2e(r: RequestRecord) -> float:
    return (r.end if r.end is not None else r.start) - r.start


def parse_slo(text: str) -> dict[str, float]:
    """`ttft=0.5,tpot=0.05` -> {"ttft": 0.5, "tpot": 0.05} (seconds; keys from SLO_KEYS)."""
    slo = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in SLO_KEYS:
            raise ValueError(f"SLO items are KEY=SECONDS with KEY in {SLO_KEYS}, got {item!r}")
        slo[key.strip()] = float(value)
        if slo[key.strip()] <= 0:
            raise ValueError(f"SLO threshold must be positive, got {item!r}")
    return slo


def meets_slo(r: RequestRecord, slo: dict[str, float]) -> bool:
    """Whether a successful request met every threshold (a missing figure cannot miss)."""
    figures = {"ttft": ttft(r), "tpot": tpot(r), "e2e": e2e(r)}
    return all(figures[k] is None or figures[k] <= limit for k, limit in slo.items())


def summarize(records: list[RequestRecord], duration_s: float, slo: dict[str, float] | None = None) -> Summary:
    """The figures of a run whose requests are `records`, over `duration_s` seconds."""
    ok = [r for r in records if r.error is None]
    per_s = 1.0 / duration_s if duration_s > 0 else 0.0
    prompt = sum(r.prompt_tokens or 0 for r in ok)
    completion = sum(output_tokens(r) for r in ok)
    good = sum(meets_slo(r, slo) for r in ok) if slo else None
    return Summary(
        duration_s=duration_s,
        sent=len(records),
        succeeded=len(ok),
        failed=len(records) - len(ok),
        errors=dict(Counter(r.error for r in records if r.error is not None)),
        prompt_tokens=prompt,
        completion_tokens=completion,
        usage_missing=sum(r.completion_tokens is None for r in ok),
        request_throughput=len(ok) * per_s,
        output_throughput=completion * per_s,
        total_token_throughput=(prompt + completion) * per_s,
        ttft=distribution([t for t in map(ttft, ok) if t is not None]),
        tpot=distribution([t for t in map(tpot, ok) if t is not None]),
        itl=distribution([gap for r in ok for gap in itls(r)]),
        e2e=distribution([e2e(r) for r in ok]),
        slo=dict(slo or {}),
        good_requests=good,
        goodput=None if good is None else good * per_s,
    )


def tokens_over_time(records: list[RequestRecord], t0: float, bucket_s: float = 1.0) -> list[tuple[float, float]]:
    """(bucket start in s after t0, output tokens/s in that bucket) over successful requests.

    A chunk may carry several tokens; each request's tokens are spread evenly over its chunks.
    """
    buckets: Counter[int] = Counter()
    for r in records:
        if r.error is None and r.chunk_times:
            weight = output_tokens(r) / len(r.chunk_times)
            for t in r.chunk_times:
                buckets[int((t - t0) // bucket_s)] += weight
    if not buckets:
        return []
    return [(i * bucket_s, buckets[i] / bucket_s) for i in range(max(buckets) + 1)]
