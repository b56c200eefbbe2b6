"""redact: answers of a model or tenant with output redaction go through a redacting `send`
(access/redacting_send.py), whichever stage answers. Never refuses. Without redaction
rules: a null stage.

It runs right after authenticate, before any stage that may answer. It and the shadow
stage are the stages that wrap the context's `send` (its copy of the answer sits inside,
so it compares what the upstreams said).
"""

from __future__ import annotations

from typing import Callable

from kvserve.gateway.access.redacting_send import RedactingSend
from kvserve.gateway.context import RequestContext
from kvserve.gateway.metrics import GatewayMetrics
from kvserve.gateway.output_config import RedactionConfig


class Redact:
    def __init__(self, config: RedactionConfig, models: set[str], metrics: GatewayMetrics) -> None:
        self.config = config
        self.models = models  # metric labels: configured names only, never a client's arbitrary one
        self.counter = metrics.output.redactions

    async def run(self, ctx: RequestContext) -> None:
        request = ctx.request
        assert request is not None
        kinds = self.config.kinds(request.model, ctx.identity.tenant)
        if kinds:
            found = self.counter_for(request.model if request.model in self.models else "unknown")
            ctx.send = RedactingSend(ctx.send, kinds, self.config.max_hold_chars, found)

    def counter_for(self, model: str) -> Callable[[str], None]:
        counter = self.counter

        def found(kind: str) -> None:
            counter.labels(model, kind).inc()

        return found
