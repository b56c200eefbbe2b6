"""limit: charge the request's estimate against every limit of its key and tenant in one
call (429 with Retry-After and x-ratelimit-* headers; 503 when Redis is down and limits
fail closed). Without limits, keys or Redis: a null stage."""

from __future__ import annotations

import random

from kvserve.gateway.access.ratelimit import REASONS, Charge, Decision, Limiter, limit_headers, refusal
from kvserve.gateway.access_config import LimitsConfig, RedisConfig, TenantLimits
from kvserve.gateway.context import Admission, RequestContext
from kvserve.gateway.metrics import AccessMetrics
from kvserve.gateway.request import ClientRequest
from kvserve.gateway.store.redis_link import RedisUnavailable
from kvserve.openai_error import OpenAIError

NO_TENANT_LIMITS = TenantLimits()


class Limit:
    def __init__(self, limiter: Limiter, limits: LimitsConfig, tenants: dict[str, TenantLimits],
                 redis: RedisConfig, metrics: AccessMetrics) -> None:
        self.limiter = limiter
        self.default_max_tokens = limits.default_max_tokens
        self.tenants = tenants
        self.fail_closed = redis.on_failure == "closed"
        self.metrics = metrics
        self.slots = random.Random()  # slot ids need to be unique, not secret: no syscall per id

    async def run(self, ctx: RequestContext) -> None:
        request, version, identity = ctx.request, ctx.version, ctx.identity
        assert request is not None and version is not None
        charge = Charge(identity.key_id, identity.tenant, version.model, f"{self.slots.getrandbits(128):032x}",
                        request.route.est_prompt_tokens + self.max_tokens(request), identity.limits,
                        self.tenants.get(identity.tenant) or NO_TENANT_LIMITS)
        if not charge.limited:
            ctx.admission = Admission(charge, Decision(), [])
            return
        decision = await self.decide(charge)
        if not decision.admitted:
            self.metrics.refused.labels(f"limit_{REASONS[decision.code]}").inc()
            raise refusal(charge, decision)  # nothing to settle
        ctx.admission = Admission(charge, decision, limit_headers(charge, decision))

    def max_tokens(self, request: ClientRequest) -> int:
        payload = {**request.payload, **request.overrides}
        return int(payload.get("max_completion_tokens") or payload.get("max_tokens") or self.default_max_tokens)

    async def decide(self, charge: Charge) -> Decision:
        try:
            return await self.limiter.admit(charge)
        except RedisUnavailable:
            if self.fail_closed:
                raise OpenAIError(503, "rate limits cannot be checked right now; retry later", "service_unavailable",
                                  code="rate_limiter_unavailable", headers={"retry-after": "1"}) from None
            self.metrics.unenforced.inc()
            return Decision(enforced=False)
