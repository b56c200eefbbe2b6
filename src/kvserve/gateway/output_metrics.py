"""Metrics of output redaction, the audit log and shadow traffic (part of GatewayMetrics' registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class OutputMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.redactions = Counter("kvserve:gateway_redactions", "Items redacted in answers, by kind (never the text)",
                                  ["model", "kind"], registry=r)
