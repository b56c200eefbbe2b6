"""The gateway's runtime state: config, endpoints, routing table, upstream sessions, the pipeline."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Callable

from kvserve.gateway.backends import Backends
from kvserve.gateway.config import GatewayConfig, load_config
from kvserve.gateway.fleet.discovery import Discovery
from kvserve.gateway.fleet.endpoints import EndpointRegistry
from kvserve.gateway.fleet.monitor import Monitor
from kvserve.gateway.fleet.upstream import UpstreamClient
from kvserve.gateway.metrics import GatewayMetrics
from kvserve.gateway.pipeline import Pipeline, build_pipeline
from kvserve.gateway.proxy import Proxy
from kvserve.gateway.rollouts.controller import RolloutController
from kvserve.gateway.rollouts.metrics import RolloutMetrics
from kvserve.gateway.rollouts.store import MemoryRollouts, RedisRollouts
from kvserve.gateway.routing.table import RoutingTable
from kvserve.tracing import NULL_TRACER, Tracer
from kvserve.gateway.store import memory_metrics

log = logging.getLogger("kvserve.gateway")


class GatewayState:
    """One per gateway process. `start` (inside the event loop) opens the upstream
    sessions and the monitors and builds the pipeline; `apply` swaps in a new config
    without touching requests in flight (they hold the objects they resolved)."""

    def __init__(self, config: GatewayConfig, config_path: Path | None = None,
                 clock: Callable[[], float] = time.monotonic, tracer: Tracer = NULL_TRACER) -> None:
        self.config = config
        self.tracer = tracer
        self.config_path = config_path
        self.clock = clock
        self.rng = random.Random()
        self.metrics = GatewayMetrics()
        self.registry = EndpointRegistry(config.breaker, self._breaker_changed)
        self.table = RoutingTable.build(config, self.registry)
        self.metrics.configure(config, self.table)
        self.admin_key = config.admin.resolved_key()
        self.draining = False  # set on SIGTERM: /ready answers 503
        self.backends = Backends(config, self.metrics.access)
        store = MemoryRollouts() if self.backends.link is None else RedisRollouts(self.backends.link)
        self.rollouts = RolloutController(config.rollouts, store, lambda: self.table,
                                          RolloutMetrics(self.metrics.registry), quality=self.backends.quality,
                                          audit=lambda: self.backends.audit)
        memory_metrics.register(self.metrics.registry, self.backends.store)
        self._proxy: Proxy | None = None
        self._pipeline: Pipeline | None = None
        self._monitor: Monitor | None = None
        self._discovery = Discovery(self.registry, lambda: (self.config, self.table), self.sync_monitors)
        self._clients: list[UpstreamClient] = []

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise RuntimeError("GatewayState.start() was not called")
        return self._pipeline

    async def start(self) -> None:
        upstream = UpstreamClient(self.config.timeouts.connect_s)
        control = UpstreamClient(self.config.timeouts.connect_s)  # scrapes and probes never queue behind traffic
        self._clients = [upstream, control]
        self._proxy = Proxy(upstream, self.config, self.metrics, self.clock)
        self._monitor = Monitor(control, self.config.scrape, self.config.health, self.clock)
        self._monitor.sync(self.table.endpoints())
        self._discovery.sync()
        self.backends.start()  # the semantic cache's model loads in the background
        self._build()
        await self.rollouts.start()

    async def close(self) -> None:
        await self._discovery.close()
        await self.rollouts.close()
        if self._monitor is not None:
            await self._monitor.close()
        for client in self._clients:
            await client.close()
        self._clients = []
        await self.backends.close()
        self.tracer.shutdown()

    def apply(self, config: GatewayConfig) -> None:
        """Switch to `config`; endpoints it still lists keep their breakers and counters."""
        if (config.server.host, config.server.port) != (self.config.server.host, self.config.server.port):
            log.warning("server.host/port changes need a restart; keeping the current listener")
        self.registry.set_breaker_config(config.breaker)
        self.table = RoutingTable.build(config, self.registry, previous=self.table)
        self.metrics.configure(config, self.table)
        self.admin_key = config.admin.resolved_key()
        self.backends.configure(config)
        self.rollouts.configure(config.rollouts)
        self.rollouts.reassert()
        self.config = config
        if self._proxy is not None:
            self._proxy.configure(config)
        self._build()
        self._discovery.sync()  # the new table's pools get the endpoints DNS already found
        self.sync_monitors()

    def _build(self) -> None:
        if self._proxy is not None:
            self._pipeline = build_pipeline(self.config, self.table, self._proxy, self.backends, self.metrics,
                                            self.clock, self.rng, self.rollouts.window, self.tracer)

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

    def _breaker_changed(self, url: str, state: str) -> None:
        log.warning("circuit breaker of %s is now %s", url, state)
        self.metrics.breaker_changed(url, state)

    def ready(self) -> bool:
        """Takes requests: not draining, and an endpoint is routable or requests may wait
        for one (hold), which a fleet scaled to zero needs to receive its waking request."""
        now = self.clock()
        holds = self.config.hold.timeout_s > 0
        return not self.draining and (holds or any(e.routable(now) for e in self.table.endpoints()))
