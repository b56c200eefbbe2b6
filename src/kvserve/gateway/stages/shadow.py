"""shadow: for a model with a shadow candidate, a share of its requests is also sent to the
candidate version in the background (quality/mirror.py); the client's answer passes
through a capture on its way out. Never refuses, never delays. Without shadow rules: a
null stage."""

from __future__ import annotations

import random
from typing import Callable

from kvserve.gateway.context import RequestContext
from kvserve.gateway.metrics import GatewayMetrics
from kvserve.gateway.output_config import ShadowConfig
from kvserve.gateway.proxy import Proxy
from kvserve.gateway.quality.capture import Capture
from kvserve.gateway.quality.mirror import Mirror
from kvserve.gateway.routing.table import RoutingTable
from kvserve.gateway.store.semantic_cache import Embedder


class Shadow:
    def __init__(self, config: ShadowConfig, table: RoutingTable, proxy: Proxy, mirror: Mirror,
                 embedder: Embedder | None, metrics: GatewayMetrics, rng: random.Random,
                 clock: Callable[[], float]) -> None:
        self.config = config
        self.table = table
        self.proxy = proxy
        self.mirror = mirror
        self.embedder = embedder
        self.metrics = metrics
        self.rng = rng
        self.clock = clock

    async def run(self, ctx: RequestContext) -> None:
        request, version = ctx.request, ctx.version
        assert request is not None and version is not None
        rule = self.config.models.get(version.model)
        if rule is None or version.name == rule.candidate or self.rng.random() >= rule.share:
            return
        candidate = self.table.version(version.model, rule.candidate)
        if candidate is None:
            return
        if self.mirror.in_flight >= self.config.max_in_flight:
            self.metrics.output.shadow.labels(candidate.model, candidate.name, "skipped").inc()
            return
        capture = Capture(ctx.send, request.path.endswith("chat/completions"), self.clock)
        ctx.send = capture  # the client's answer, copied as it passes
        self.mirror.start(self.mirror.run(request, version, capture, candidate, self.proxy, self.config,
                                          self.embedder, self.metrics))
