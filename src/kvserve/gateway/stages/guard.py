"""guard: the key may use the model (403); the input is safe and within size limits (400, 413)."""

from __future__ import annotations

from kvserve.gateway.access.auth import forbidden_model
from kvserve.gateway.access.guard import InputGuard
from kvserve.gateway.access.keys import KeyLimits
from kvserve.gateway.context import RequestContext
from kvserve.gateway.errors import bad_request
from kvserve.gateway.metrics import AccessMetrics
from kvserve.gateway.request import ClientRequest
from kvserve.openai_error import OpenAIError


class Guard:
    """A model the gateway does not serve passes here: the route stage answers 404 for it."""

    def __init__(self, guards: dict[str, InputGuard], metrics: AccessMetrics) -> None:
        self.guards = guards
        self.metrics = metrics

    async def run(self, ctx: RequestContext) -> None:
        request = ctx.request
        assert request is not None
        try:
            record = ctx.identity.record
            if record is not None and not record.allows(request.model):
                raise forbidden_model(request.model)
            guard = self.guards.get(request.model)
            if guard is not None:
                guard.check(request.payload, len(request.body), request.route.est_prompt_tokens, ctx.identity.limits)
            cap_max_tokens(request, ctx.identity.limits)
        except OpenAIError as error:
            self.metrics.refused.labels(error.code or "invalid").inc()
            raise


def cap_max_tokens(request: ClientRequest, limits: KeyLimits) -> None:
    """The key's max_tokens limit: refuse a request over it, give it to one that names none."""
    if not limits.max_tokens:
        return
    field = "max_completion_tokens" if "max_completion_tokens" in request.payload else "max_tokens"
    asked = request.payload.get(field)
    if asked is None:
        request.overrides["max_tokens"] = limits.max_tokens
    elif asked > limits.max_tokens:
        raise bad_request(f"'{field}' is {asked}, over this key's limit of {limits.max_tokens}", field)
