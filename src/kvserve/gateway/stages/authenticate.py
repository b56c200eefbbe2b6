"""authenticate: the API key's record, tenant and priority tier (401, 503). Without keys: a null stage."""

from __future__ import annotations

from kvserve.gateway.access.auth import KeySource, authenticate
from kvserve.gateway.context import Identity, RequestContext
from kvserve.gateway.metrics import AccessMetrics
from kvserve.openai_error import OpenAIError


class Authenticate:
    def __init__(self, keys: KeySource, metrics: AccessMetrics) -> None:
        self.keys = keys
        self.metrics = metrics

    async def run(self, ctx: RequestContext) -> None:
        try:
            record = await authenticate(self.keys, ctx.scope["headers"])
        except OpenAIError as error:
            self.metrics.refused.labels(error.code or "auth").inc()
            raise
        ctx.identity = Identity(record.tenant, record.key_id, record)
        request = ctx.request
        assert request is not None
        # a key may lower its priority by header, never raise it
        request.priority = max(request.priority, record.priority) if request.priority_set else record.priority
