"""Per model version: how its answers compared with the primary's (shadow traffic) and what
clients scored them (feedback). Plain counters in the gateway's process, reported by
`GET /admin/quality` beside the same figures in the metrics (summed over gateways), and
read by the rollout controller when a rollout's plan judges quality."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kvserve.control.rollout import QualityWindow

RECENT = 20  # comparisons kept per version for the report (ids and figures, never text)


@dataclass(frozen=True)
class Comparison:
    """One shadow answer against the primary's answer to the same request."""

    request_id: str
    primary_version: str
    exact: bool | None  # same text; None when the request was not greedy (temperature 0)
    similarity: float | None  # cosine of the two answers' embeddings; None when not computed
    primary_chars: int
    shadow_chars: int
    primary_s: float  # request start to the last byte
    shadow_s: float


@dataclass
class ShadowSums:
    """A candidate's comparisons against one primary version (a rollout judges B against A only)."""

    similarities: int = 0
    similarity_sum: float = 0.0
    greedy: int = 0
    exact: int = 0


@dataclass
class VersionQuality:
    compared: int = 0
    greedy: int = 0
    exact: int = 0
    similarity_n: int = 0
    similarity_sum: float = 0.0
    similarity_min: float | None = None
    primary_chars: int = 0
    shadow_chars: int = 0
    primary_s: float = 0.0
    shadow_s: float = 0.0
    failed: dict[str, int] = field(default_factory=dict)  # reason -> shadow requests that gave no comparison
    scores: int = 0
    score_sum: float = 0.0
    thumbs_up: int = 0
    thumbs_down: int = 0
    recent: deque[Comparison] = field(default_factory=lambda: deque(maxlen=RECENT))
    against: dict[str, ShadowSums] = field(default_factory=dict)  # primary version -> comparisons with it

    def add(self, c: Comparison) -> None:
        sums = self.against.setdefault(c.primary_version, ShadowSums())
        sums.greedy += c.exact is not None
        sums.exact += bool(c.exact)
        if c.similarity is not None:
            sums.similarities += 1
            sums.similarity_sum += c.similarity
        self.compared += 1
        self.greedy += c.exact is not None
        self.exact += bool(c.exact)
        if c.similarity is not None:
            self.similarity_n += 1
            self.similarity_sum += c.similarity
            self.similarity_min = c.similarity if self.similarity_min is None else min(self.similarity_min,
                                                                                       c.similarity)
        self.primary_chars += c.primary_chars
        self.shadow_chars += c.shadow_chars
        self.primary_s += c.primary_s
        self.shadow_s += c.shadow_s
        self.recent.append(c)

    def report(self) -> dict[str, Any]:
        n = self.compared
        out: dict[str, Any] = {
            "compared": n, "failed": dict(self.failed),
            "exact_match_rate": round(self.exact / self.greedy, 4) if self.greedy else None,
            "similarity_mean": round(self.similarity_sum / self.similarity_n, 4) if self.similarity_n else None,
            "similarity_min": None if self.similarity_min is None else round(self.similarity_min, 4),
            "length_ratio": round(self.shadow_chars / self.primary_chars, 4) if self.primary_chars else None,
            "latency_s": {"primary": round(self.primary_s / n, 4),
                          "shadow": round(self.shadow_s / n, 4)} if n else None,
            "feedback": {"scores": self.scores, "score_mean": round(self.score_sum / self.scores, 4) if self.scores
                         else None, "thumbs_up": self.thumbs_up, "thumbs_down": self.thumbs_down},
            "recent": [{"request_id": c.request_id, "primary_version": c.primary_version, "exact": c.exact,
                        "similarity": None if c.similarity is None else round(c.similarity, 4),
                        "length": [c.primary_chars, c.shadow_chars],
                        "latency_s": [round(c.primary_s, 4), round(c.shadow_s, 4)]} for c in self.recent],
        }
        return out


class QualityBook:
    """One per gateway process, kept across reloads."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], VersionQuality] = {}

    def of(self, model: str, version: str) -> VersionQuality:
        return self.versions.setdefault((model, version), VersionQuality())

    def failed(self, model: str, version: str, reason: str) -> None:
        failed = self.of(model, version).failed
        failed[reason] = failed.get(reason, 0) + 1

    def feedback(self, model: str, version: str, score: float, thumbs: str | None) -> None:
        q = self.of(model, version)
        q.scores += 1
        q.score_sum += score
        q.thumbs_up += thumbs == "up"
        q.thumbs_down += thumbs == "down"

    def window(self, model: str, candidate: str, baseline: str) -> QualityWindow:
        """Everything this process counted of `candidate`: its shadow comparisons with
        `baseline`'s answers and its client scores (a rollout subtracts what it found at its start)."""
        q = self.versions.get((model, candidate))
        if q is None:
            return QualityWindow()
        s = q.against.get(baseline, ShadowSums())
        return QualityWindow(s.similarities, s.similarity_sum, s.greedy, s.exact, q.scores, q.score_sum)

    def report(self) -> dict[str, Any]:
        models: dict[str, dict[str, Any]] = {}
        for (model, version), q in sorted(self.versions.items()):
            models.setdefault(model, {})[version] = q.report()
        return {"models": models}
