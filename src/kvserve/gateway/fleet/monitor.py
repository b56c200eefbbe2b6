"""Background tasks that keep every endpoint's stats and health current."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from kvserve.gateway.config import HealthConfig, ScrapeConfig
from kvserve.gateway.fleet import health
from kvserve.gateway.fleet.endpoints import Endpoint
from kvserve.gateway.fleet.scrape import scrape
from kvserve.gateway.fleet.upstream import UpstreamClient

log = logging.getLogger("kvserve.gateway.fleet.monitor")


class Monitor:
    """Two loops per endpoint: /metrics every scrape interval and /ready every health
    interval. `sync` starts loops for new endpoints and stops those of removed ones."""

    def __init__(self, client: UpstreamClient, scrape: ScrapeConfig, health_config: HealthConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.scrape = scrape
        self.health = health_config
        self.clock = clock
        self.tasks: dict[str, list[asyncio.Task[None]]] = {}

    def configure(self, scrape: ScrapeConfig, health_config: HealthConfig) -> None:
        self.scrape, self.health = scrape, health_config

    def sync(self, endpoints: list[Endpoint]) -> None:
        wanted = {e.url: e for e in endpoints}
        for url in [u for u in self.tasks if u not in wanted]:
            for task in self.tasks.pop(url):
                task.cancel()
        for url, endpoint in wanted.items():
            if url not in self.tasks:
                self.tasks[url] = [asyncio.ensure_future(self._scrape_loop(endpoint)),
                                   asyncio.ensure_future(self._health_loop(endpoint))]

    async def close(self) -> None:
        tasks = [t for group in self.tasks.values() for t in group]
        self.tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    async def _scrape_loop(self, endpoint: Endpoint) -> None:
        while True:
            started = self.clock()
            try:
                fresh = await scrape(self.client, endpoint, self.scrape.path, self.scrape.timeout_s, started)
                if fresh is not None:
                    endpoint.engine = fresh
            except (OSError, asyncio.TimeoutError, ValueError) as exc:
                log.debug("scrape of %s failed: %r", endpoint.url, exc)
            await asyncio.sleep(max(0.0, self.scrape.interval_s - (self.clock() - started)))

    async def _health_loop(self, endpoint: Endpoint) -> None:
        while True:
            started = self.clock()
            ok = await health.check(self.client, endpoint, self.health)
            health.record_check(endpoint, ok, self.health)
            await asyncio.sleep(max(0.0, self.health.interval_s - (self.clock() - started)))
