"""Prometheus view of the in-process store: bytes and entries per kind, the budget, evictions.

A collector read at scrape time, so the store's hot path updates plain counters only.
Kinds are the key prefixes: `cache` (exact-cache answers), `idem` (Idempotency-Key answers
and holds), `sem` (semantic-cache indexes and answers), `stream` (resumable streams), `fb`
(which version gave an answer, for feedback).
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kvserve.gateway.store.memory_store import KINDS, MemoryStore


class MemoryCollector:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        usage = self.store.usage
        size = GaugeMetricFamily("kvserve:gateway_memory_bytes", "Bytes the in-process store holds, by kind",
                                 labels=["kind"])
        entries = GaugeMetricFamily("kvserve:gateway_memory_entries", "Entries the in-process store holds, by kind",
                                    labels=["kind"])
        for kind in (*KINDS, "other"):
            size.add_metric([kind], usage.bytes[kind])
            entries.add_metric([kind], usage.entries[kind])
        evictions = CounterMetricFamily("kvserve:gateway_memory_evictions",
                                        "Entries evicted before their TTL (reason: budget or entries)",
                                        labels=["kind", "reason"])
        for (kind, reason), count in sorted(usage.evictions.items()):
            evictions.add_metric([kind, reason], count)
        yield size
        yield entries
        yield GaugeMetricFamily("kvserve:gateway_memory_budget_bytes",
                                "The in-process store's budget (memory.max_bytes)", value=self.store.max_bytes)
        yield evictions


def register(registry: CollectorRegistry, store: object) -> None:
    """Export the store's memory use, when it is the in-process one (Redis reports its own)."""
    if isinstance(store, MemoryStore):
        registry.register(MemoryCollector(store))
