"""The gateway's runtime state: config, endpoints, routing table, upstream sessions."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Callable

from kvserve.gateway.access import AccessControl, access_enabled
from kvserve.gateway.config import GatewayConfig, load_config
from kvserve.gateway.endpoints import EndpointRegistry
from kvserve.openai_error import OpenAIError
from kvserve.gateway.metrics import GatewayMetrics
from kvserve.gateway.monitor import Monitor
from kvserve.gateway.proxy import Proxy
from kvserve.gateway.request import ClientRequest, RequestParser
from kvserve.gateway.routing import RoutingTable
from kvserve.gateway.shedding import Shedder
from kvserve.gateway.upstream import UpstreamClient
from kvserve.gateway.versions import VersionRoute

log = logging.getLogger("kvserve.gateway")


class GatewayState:
    """One per gateway process. `start` (inside the event loop) opens the upstream
    sessions and the monitors; `apply` swaps in a new config without touching requests
    in flight (they hold the objects they resolved)."""

    def __init__(self, config: GatewayConfig, config_path: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.config_path = config_path
        self.clock = clock
        self.rng = random.Random()
        self.metrics = GatewayMetrics()
        self.registry = EndpointRegistry(config.breaker, self._breaker_changed)
        self.table = RoutingTable.build(config, self.registry)
        self.parser = RequestParser(config)
        self.shedder = Shedder(config.shedding)
        self.admin_key = config.admin.resolved_key()
        self.draining = False  # set on SIGTERM: /ready answers 503
        # part 2 (keys, limits, cache, resumable streams); None keeps part 1's lean path
        self.access = AccessControl(config, self.metrics.access) if access_enabled(config) else None
        self._proxy: Proxy | None = None
        self._monitor: Monitor | None = None
        self._clients: list[UpstreamClient] = []

    @property
    def proxy(self) -> Proxy:
        if self._proxy is None:
            raise RuntimeError("GatewayState.start() was not called")
        return self._proxy

    async def start(self) -> None:
        upstream = UpstreamClient(self.config.timeouts.connect_s)
        control = UpstreamClient(self.config.timeouts.connect_s)  # scrapes and probes never queue behind traffic
        self._clients = [upstream, control]
        self._proxy = Proxy(upstream, self.config, self.metrics, self.clock)
        self._monitor = Monitor(control, self.config.scrape, self.config.health, self.clock)
        self._monitor.sync(self.table.endpoints())
        if self.access is not None:
            self.access.start()  # the semantic cache's model loads in the background

    async def close(self) -> None:
        if self._monitor is not None:
            await self._monitor.close()
        for client in self._clients:
            await client.close()
        self._clients = []
        if self.access is not None:
            await self.access.close()

    def apply(self, config: GatewayConfig) -> None:
        """Switch to `config`; endpoints it still lists keep their breakers and counters."""
        if (config.server.host, config.server.port) != (self.config.server.host, self.config.server.port):
            log.warning("server.host/port changes need a restart; keeping the current listener")
        self.registry.set_breaker_config(config.breaker)
        self.table = RoutingTable.build(config, self.registry, previous=self.table)
        self.parser = RequestParser(config)
        self.shedder = Shedder(config.shedding)
        self.admin_key = config.admin.resolved_key()
        self._apply_access(config)
        self.config = config
        if self._proxy is not None:
            self._proxy.configure(config)
        self.sync_monitors()

    def _apply_access(self, config: GatewayConfig) -> None:
        if config.redis != self.config.redis:
            log.warning("redis settings change needs a restart; keeping the current connection")
        if self.access is not None:
            self.access.configure(config)
        elif access_enabled(config):
            self.access = AccessControl(config, self.metrics.access)

    def reload(self) -> None:
        """Re-read the config file; raises ConfigError (and keeps the old config) if it is bad."""
        if self.config_path is None:
            raise RuntimeError("the gateway was not started from a config file")
        self.apply(load_config(self.config_path))
        log.info("reloaded %s", self.config_path)

    def sync_monitors(self) -> None:
        if self._monitor is not None:
            self._monitor.configure(self.config.scrape, self.config.health)
            self._monitor.sync(self.table.endpoints())

    def shed_check(self, request: ClientRequest, version: VersionRoute) -> None:
        """Raise 429 if the request is low priority and its pool is saturated."""
        if not self.shedder.sheddable(request.priority):
            return
        now = self.clock()
        stale = self.config.scrape.interval_s * self.config.scrape.stale_after
        pool = version.pools_for(request.route.est_prompt_tokens)[0]
        try:
            self.shedder.check(request.priority, pool.snapshot(now, stale))
        except OpenAIError:
            self.metrics.shed.labels(version.model, version.name).inc()
            raise

    def _breaker_changed(self, url: str, state: str) -> None:
        log.warning("circuit breaker of %s is now %s", url, state)
        self.metrics.breaker_changed(url, state)

    def ready(self) -> bool:
        now = self.clock()
        return not self.draining and any(e.routable(now) for e in self.table.endpoints())
