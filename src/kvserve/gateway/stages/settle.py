"""settle: the end of every request, however it ended: metrics, the request log (never the
prompt or the answer), and with access features on the accounts (usage, caches, keys)."""

from __future__ import annotations

import json
import logging
from typing import Callable

from kvserve.gateway.access import pii
from kvserve.gateway.access.audit_record import request_fields
from kvserve.gateway.access.settlement import Accounts, NoAccounts
from kvserve.gateway.audit import AuditLog
from kvserve.gateway.context import RequestContext
from kvserve.gateway.metrics import GatewayMetrics
from kvserve.gateway.rollouts.window import OutcomeWindow

access_log = logging.getLogger("kvserve.gateway.access")


class Settle:
    """Runs after the other stages, also when one refused or failed; never raises."""

    def __init__(self, metrics: GatewayMetrics, clock: Callable[[], float], log_requests: bool, log_prompts: bool,
                 accounts: Accounts | NoAccounts, window: OutcomeWindow, audit: AuditLog | None = None) -> None:
        self.audit = audit  # the audit log's request lines, when it keeps them
        self.metrics = metrics
        self.clock = clock
        self.log_requests = log_requests
        self.log_prompts = log_prompts
        self.accounts = accounts
        self.window = window  # what rollouts judge versions by

    def run(self, ctx: RequestContext) -> None:
        self.accounts.start(ctx)
        duration = self.clock() - ctx.started
        outcome, version = ctx.outcome, ctx.version
        model, vname = (version.model, version.name) if version is not None else ("unknown", "none")
        self.metrics.request_done(model, vname, outcome.endpoint, outcome.status, duration, outcome.ttft)
        request_id = ctx.request.request_id if ctx.request else None
        ctx.trace.end(outcome.status, {"kvserve.model": model, "kvserve.version": vname,
                                       "kvserve.request_id": request_id, "kvserve.endpoint": outcome.endpoint,
                                       "kvserve.attempts": outcome.attempts})
        self.window.record(model, vname, outcome, ctx.request is not None and ctx.request.stream, duration)
        if self.log_requests and access_log.isEnabledFor(logging.INFO):
            access_log.info(json.dumps(self.line(ctx, model, vname, duration)))
        if self.audit is not None:
            try:
                self.audit.write("request", request_fields(ctx, model, vname, duration))
            except (ValueError, TypeError):  # an upstream's malformed usage: the line is lost, not the request
                access_log.exception("audit line not written")

    def line(self, ctx: RequestContext, model: str, vname: str, duration: float) -> dict[str, object]:
        request, outcome = ctx.request, ctx.outcome
        line: dict[str, object] = {
            "request_id": request.request_id if request else None, "model": model, "version": vname,
            "endpoint": outcome.endpoint, "status": outcome.status, "attempts": outcome.attempts,
            "stream": request.stream if request else None, "priority": request.priority if request else None,
            "ttft_ms": None if outcome.ttft is None else round(outcome.ttft * 1000, 2),
            "duration_ms": round(duration * 1000, 2), "error": outcome.error,
        }
        line.update(self.accounts.log_fields(ctx))
        if self.log_prompts and request is not None:
            line["prompt"] = pii.redact(request.route.prompt)
        return line
