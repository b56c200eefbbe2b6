"""What the gateway measured of each version while a rollout of its model runs, and the
snapshot of A against B that `kvserve.control.rollout.decide` judges.

Outcomes are recorded only for models under a rollout (one dict lookup otherwise), stamped
with their arrival on the wall clock, so that a window "since this step began" holds only
requests sent at this step's weights, and survives the comparison with a step start
restored after a gateway restart.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from kvserve.control.rollout import MetricsSnapshot, VersionWindow
from kvserve.gateway.outcome import Outcome


@dataclass(frozen=True)
class Sample:
    """One forwarded request's outcome."""

    arrival: float  # wall-clock seconds the request arrived
    error: bool  # 5xx, timeout, no healthy endpoint, or a stream that broke
    ttft_s: float | None  # arrival to first byte, successes only
    tpot_s: float | None  # time per output token, successful streams with 2+ events only


def sample_of(outcome: Outcome, stream: bool, duration: float, now: float) -> Sample | None:
    """The sample of a request that settled at `now` after `duration` seconds; None for what
    says nothing about the version (cache hits, refusals, client errors, clients that left)."""
    if not outcome.forwarded or 400 <= outcome.status < 500:
        return None
    error = outcome.status >= 500 or outcome.status == 0 or outcome.error is not None
    if error:
        return Sample(now - duration, True, None, None)
    tpot = None
    if stream and outcome.ttft is not None and outcome.events >= 2:
        # SSE events after the first one; the closing events make it a slight underestimate,
        # the same for both versions
        tpot = max(0.0, duration - outcome.ttft) / (outcome.events - 1)
    return Sample(now - duration, False, outcome.ttft, tpot)


def p95(values: list[float]) -> float | None:
    """Nearest-rank 95th percentile; None without values."""
    if not values:
        return None
    values.sort()
    return values[math.ceil(0.95 * len(values)) - 1]


class OutcomeWindow:
    """Samples per (model, version) for the models being watched, the newest `max_samples`
    per version. The controller watches a model from its rollout's step start."""

    def __init__(self, max_samples: int, clock: Callable[[], float] = time.time) -> None:
        self.max_samples = max_samples
        self.clock = clock
        self.watched: dict[str, float] = {}  # model -> earliest arrival still wanted
        self.samples: dict[tuple[str, str], deque[Sample]] = {}

    def watch(self, model: str, since: float) -> None:
        """Keep samples of `model` that arrived at `since` or later (and drop older ones)."""
        self.watched[model] = since
        for (m, _), samples in self.samples.items():
            if m == model:
                while samples and samples[0].arrival < since:
                    samples.popleft()

    def unwatch(self, model: str) -> None:
        self.watched.pop(model, None)
        for key in [k for k in self.samples if k[0] == model]:
            del self.samples[key]

    def record(self, model: str, version: str, outcome: Outcome, stream: bool, duration: float) -> None:
        since = self.watched.get(model)
        if since is None:
            return
        sample = sample_of(outcome, stream, duration, self.clock())
        if sample is None or sample.arrival < since:
            return
        samples = self.samples.get((model, version))
        if samples is None:
            samples = self.samples[(model, version)] = deque(maxlen=self.max_samples)
        samples.append(sample)

    def version_window(self, model: str, version: str, start: float, end: float) -> VersionWindow:
        chosen = [s for s in self.samples.get((model, version), ()) if start <= s.arrival <= end]
        errors = sum(s.error for s in chosen)
        ttfts = [s.ttft_s for s in chosen if s.ttft_s is not None]
        tpots = [s.tpot_s for s in chosen if s.tpot_s is not None]
        return VersionWindow(len(chosen), errors, p95(ttfts), p95(tpots))

    def snapshot(self, model: str, baseline: str, candidate: str, start: float, end: float) -> MetricsSnapshot:
        """A against B over the requests that arrived in [start, end]."""
        return MetricsSnapshot(self.version_window(model, baseline, start, end),
                               self.version_window(model, candidate, start, end), start, end)
