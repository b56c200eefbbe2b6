"""Priority load shedding: refuse low-priority work while every endpoint is queueing."""

from __future__ import annotations

from typing import Sequence

from kvserve.gateway.config import SheddingConfig
from kvserve.gateway.errors import overloaded
from kvserve.gateway.routing.stats import EndpointStats


def estimated_waiting(stats: EndpointStats) -> float | None:
    """The engine's queue at the last scrape plus what this gateway sent since; None if unknown."""
    engine = stats.engine
    if engine is None:
        return None
    return engine.waiting + max(0, stats.in_flight - engine.in_flight_at_scrape)


def saturated(snapshot: Sequence[EndpointStats], threshold: int) -> bool:
    """True when every endpoint's queue is known and at or over `threshold`. An unknown
    queue does not count as full: shedding needs evidence."""
    if not snapshot:
        return False
    for stats in snapshot:
        waiting = estimated_waiting(stats)
        if waiting is None or waiting < threshold:
            return False
    return True


class Shedder:
    """Raises a 429 (with Retry-After) for a low-priority request to a saturated pool."""

    def __init__(self, config: SheddingConfig) -> None:
        self.config = config

    def sheddable(self, priority: int) -> bool:
        return self.config.enabled and priority >= self.config.shed_at_or_above

    def check(self, priority: int, snapshot: Sequence[EndpointStats]) -> None:
        if self.sheddable(priority) and saturated(snapshot, self.config.queue_threshold):
            raise overloaded(self.config.retry_after_s)
