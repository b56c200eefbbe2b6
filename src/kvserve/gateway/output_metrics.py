"""Metrics of output redaction, the audit log and shadow traffic (part of GatewayMetrics' registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SIMILARITY_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)


class OutputMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.redactions = Counter("kvserve:gateway_redactions", "Items redacted in answers, by kind (never the text)",
                                  ["model", "kind"], registry=r)
        self.shadow = Counter("kvserve:gateway_shadow_requests",
                              "Shadow requests to a candidate version (result: compared, failed, skipped)",
                              ["model", "version", "result"], registry=r)
        self.shadow_exact = Counter("kvserve:gateway_shadow_exact_matches",
                                    "Greedy shadow answers identical to the primary's", ["model", "version"],
                                    registry=r)
        self.shadow_greedy = Counter("kvserve:gateway_shadow_greedy_comparisons",
                                     "Shadow answers of greedy requests compared (exact match judged)",
                                     ["model", "version"], registry=r)
        self.shadow_chars = Counter("kvserve:gateway_shadow_answer_chars",
                                    "Characters of compared answers (answer: primary, shadow)",
                                    ["model", "version", "answer"], registry=r)
        self.shadow_seconds = Counter("kvserve:gateway_shadow_answer_seconds",
                                      "Seconds from start to last byte of compared answers (answer: primary, shadow)",
                                      ["model", "version", "answer"], registry=r)
        self.shadow_similarity = Histogram("kvserve:gateway_shadow_similarity",
                                           "Embedding similarity of shadow and primary answers",
                                           ["model", "version"], buckets=SIMILARITY_BUCKETS, registry=r)
        self.feedback = Histogram("kvserve:gateway_feedback_score", "Client scores of answers (thumbs up 1, down 0)",
                                  ["model", "version"], buckets=SCORE_BUCKETS, registry=r)
