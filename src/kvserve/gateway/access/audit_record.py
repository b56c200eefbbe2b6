"""What the audit log records of one request: metadata only, never prompt or answer text."""

from __future__ import annotations

from typing import Any

from kvserve.gateway.access.settlement import usage_of
from kvserve.gateway.context import RequestContext


def request_fields(ctx: RequestContext, model: str, version: str, duration: float) -> dict[str, Any]:
    request, outcome, lookup = ctx.request, ctx.outcome, ctx.lookup
    usage = usage_of(ctx)
    return {
        "request_id": request.request_id if request else None,
        "tenant": ctx.identity.tenant, "key_id": ctx.identity.key_id,
        "model": model, "version": version, "endpoint": outcome.endpoint,
        "status": outcome.status, "error": outcome.error,
        "stream": request.stream if request else None,
        "cached": lookup is not None and lookup.hit is not None,
        "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "latency_ms": round(duration * 1000, 2),
        "ttft_ms": None if outcome.ttft is None else round(outcome.ttft * 1000, 2),
    }
