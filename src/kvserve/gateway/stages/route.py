"""route: the model (404) and its version (pinned, sticky or weighted), a bounded wait while the
version has no ready endpoint (503 after it), and priority shedding (429).
The endpoint is picked by the proxy, attempt by attempt."""

from __future__ import annotations

import random
from typing import Callable

from kvserve.gateway.config import ScrapeConfig
from kvserve.gateway.context import RequestContext
from kvserve.gateway.fleet.hold import Hold
from kvserve.gateway.metrics import GatewayMetrics
from kvserve.gateway.routing.shedding import Shedder
from kvserve.gateway.routing.table import RoutingTable
from kvserve.gateway.routing.versions import choose_version
from kvserve.openai_error import OpenAIError


class Route:
    def __init__(self, table: RoutingTable, shedder: Shedder, scrape: ScrapeConfig, metrics: GatewayMetrics,
                 clock: Callable[[], float], rng: random.Random, hold: Hold) -> None:
        self.table = table
        self.hold = hold
        self.shedder = shedder
        self.stale_after_s = scrape.interval_s * scrape.stale_after
        self.metrics = metrics
        self.clock = clock
        self.rng = rng

    async def run(self, ctx: RequestContext) -> None:
        request = ctx.request
        assert request is not None
        model = self.table.model(request.model)
        ctx.version = version = choose_version(model, request.pinned_version, request.route.session_key, self.rng)
        pools = version.pools_for(request.route.est_prompt_tokens)
        await self.hold.until_routable(version.model, version.name, pools)
        if not self.shedder.sheddable(request.priority):
            return
        pool = pools[0]
        try:
            self.shedder.check(request.priority, pool.snapshot(self.clock(), self.stale_after_s))
        except OpenAIError:
            self.metrics.shed.labels(version.model, version.name).inc()
            raise
