"""Active readiness checks: an endpoint leaves rotation after failed checks and returns after passed ones."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from kvserve.gateway.config import HealthConfig
from kvserve.gateway.endpoints import Endpoint

log = logging.getLogger("kvserve.gateway.health")


def record_check(endpoint: Endpoint, ok: bool, config: HealthConfig) -> bool:
    """Apply one check's result; returns True when the endpoint's health flipped."""
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


async def check(session: aiohttp.ClientSession, endpoint: Endpoint, config: HealthConfig) -> bool:
    """One readiness probe: True on a 2xx answer within the timeout."""
    timeout = aiohttp.ClientTimeout(total=config.timeout_s)
    try:
        async with session.get(endpoint.url + config.path, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return False
