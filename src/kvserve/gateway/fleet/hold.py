"""Holding a request while its model has no ready endpoint (scale to zero).

A fleet scaled to zero has no endpoint to send a request to. Instead of a 503 at once,
the route stage parks the request here until an endpoint of its pools becomes routable
(a replica started and joined the pool) or `timeout_s` runs out, then 503 with
Retry-After. The number of parked requests is a gauge per model and version,
`kvserve:gateway_held_requests`: what an autoscaler watches to wake the fleet.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Iterable

from prometheus_client import Gauge

from kvserve.gateway.fleet.fleet_config import HoldConfig
from kvserve.gateway.routing.pool import Pool
from kvserve.openai_error import OpenAIError


def no_ready_replica(model: str, waited_s: float, retry_after_s: int) -> OpenAIError:
    message = f"no replica of model '{model}' became ready within {waited_s:g} s; retry later"
    return OpenAIError(503, message, "service_unavailable", code="no_ready_replica",
                       headers={"retry-after": str(retry_after_s)})


class Hold:
    """Waits for a routable endpoint; a no-op when one is there or when holding is off."""

    def __init__(self, config: HoldConfig, held: Gauge, clock: Callable[[], float]) -> None:
        self.config = config
        self.held = held
        self.clock = clock

    def routable(self, pools: Iterable[Pool]) -> bool:
        now = self.clock()
        return any(e.routable(now) for pool in pools for e in pool.endpoints)

    async def until_routable(self, model: str, version: str, pools: tuple[Pool, ...]) -> None:
        """Return once some endpoint of `pools` may take the request; raise a 503 after timeout_s."""
        if self.config.timeout_s == 0 or self.routable(pools):
            return
        gauge = self.held.labels(model, version)
        gauge.inc()
        try:
            deadline = self.clock() + self.config.timeout_s
            while not self.routable(pools):
                if self.clock() >= deadline:
                    raise no_ready_replica(model, self.config.timeout_s, self.config.retry_after_s)
                await asyncio.sleep(self.config.poll_s)
        finally:
            gauge.dec()
