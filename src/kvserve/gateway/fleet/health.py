"""Active readiness checks: an endpoint leaves rotation after failed checks and returns after passed ones.

A busy server may answer its readiness probe late while it generates. A failed check
only counts when the endpoint shows no other sign of life: no request on it got an
answer since the check before, and none is waiting on it now. A request that waits on a
hung server ends at the proxy's timeouts (and feeds the breaker); only then do the
failed checks count.
"""

from __future__ import annotations

import logging

from kvserve.gateway.config import HealthConfig
from kvserve.gateway.fleet.endpoints import Endpoint
from kvserve.gateway.fleet.scrape import get
from kvserve.gateway.fleet.upstream import UpstreamClient

log = logging.getLogger("kvserve.gateway.fleet.health")


def record_check(endpoint: Endpoint, ok: bool, config: HealthConfig) -> bool:
    """Apply one check's result; returns True when the endpoint's health flipped."""
    busy = endpoint.answers != endpoint.answers_at_check or endpoint.in_flight > 0
    endpoint.answers_at_check = endpoint.answers
    if not ok and busy and endpoint.healthy:
        log.debug("readiness check of %s failed while it answered requests: busy, not counted", endpoint.url)
        return False
    if ok:
        endpoint.health_failures = 0
        endpoint.health_successes += 1
        flip = not endpoint.healthy and endpoint.health_successes >= config.healthy_after
    else:
        endpoint.health_successes = 0
        endpoint.health_failures += 1
        flip = endpoint.healthy and endpoint.health_failures >= config.unhealthy_after
    if flip:
        endpoint.healthy = not endpoint.healthy
        log.warning("endpoint %s is now %s", endpoint.url, "healthy" if endpoint.healthy else "unhealthy")
    return flip


async def check(client: UpstreamClient, endpoint: Endpoint, config: HealthConfig) -> bool:
    """One readiness probe: True on a 2xx answer within the timeout."""
    try:
        status, _ = await get(client, endpoint, config.path, config.timeout_s)
    except (OSError, TimeoutError, ValueError):
        return False
    return 200 <= status < 300
