"""The request path: a RequestContext through an ordered list of stages.

    parse → authenticate → redact → replay → guard → route → remember → limit → cache → shadow
    → proxy, then settle

Each stage is a small object with one method, `run(ctx)`: it adds its own result to
the context, raises an OpenAIError to refuse, or answers and marks the context answered
(the stages after it do not run). A feature that is off is the null stage `Off`, so
there is one path whatever the config. `settle` runs however the request ended.
"""

from __future__ import annotations

import logging
import random
from typing import Callable, Protocol

from kvserve.gateway.access.guard import build_guards
from kvserve.gateway.access.settlement import Accounts, NoAccounts
from kvserve.gateway.backends import Backends, access_enabled, semantic_enabled
from kvserve.gateway.config import GatewayConfig
from kvserve.gateway.context import Receive, RequestContext, Scope, Send
from kvserve.gateway.fleet.hold import Hold
from kvserve.gateway.metrics import GatewayMetrics
from kvserve.gateway.proxy import Proxy, send_error
from kvserve.gateway.quality.feedback import Remember
from kvserve.gateway.request import RequestParser
from kvserve.gateway.rollouts.window import OutcomeWindow
from kvserve.gateway.routing.shedding import Shedder
from kvserve.gateway.routing.table import RoutingTable
from kvserve.gateway.stages.authenticate import Authenticate
from kvserve.gateway.stages.cache import Cache
from kvserve.gateway.stages.forward import Forward
from kvserve.gateway.stages.guard import Guard
from kvserve.gateway.stages.limit import Limit
from kvserve.gateway.stages.parse import Parse
from kvserve.gateway.stages.redact import Redact
from kvserve.gateway.stages.replay import Replay
from kvserve.gateway.stages.route import Route
from kvserve.gateway.stages.settle import Settle
from kvserve.gateway.stages.shadow import Shadow
from kvserve.openai_error import OpenAIError
from kvserve.tracing import NULL_TRACER, Tracer

log = logging.getLogger("kvserve.gateway")
INTERNAL = OpenAIError(500, "internal gateway error", "server_error", code="internal_error")


class Stage(Protocol):
    async def run(self, ctx: RequestContext) -> None: ...


class Off:
    """The null stage of a feature the config leaves off."""

    async def run(self, ctx: RequestContext) -> None:
        return None


OFF = Off()


class Pipeline:
    """The ASGI handler of the completion routes: the stages in order, then settle."""

    def __init__(self, stages: list[Stage], settle: Settle, clock: Callable[[], float],
                 tracer: Tracer = NULL_TRACER) -> None:
        # the null stages are left out: each stage that runs is a span when tracing is on
        self.stages = [(f"gateway.{type(stage).__name__.lower()}", stage) for stage in stages if stage is not OFF]
        self.settle = settle
        self.clock = clock
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trace = self.tracer.request("gateway.request", scope["headers"], {"url.path": scope["path"]})
        ctx = RequestContext(scope, receive, send, self.clock(), trace=trace)
        try:
            for name, stage in self.stages:
                with ctx.trace.stage(name):
                    await stage.run(ctx)
                if ctx.answered:
                    break
        except OpenAIError as error:
            ctx.outcome.status, ctx.outcome.error = error.status, error.code
            await send_error(send, error)
        except Exception:  # a bug: answer in OpenAI's shape if nothing was sent yet, and log it
            log.exception("request failed")
            if ctx.outcome.status == 0:
                ctx.outcome.status = 500
                await send_error(send, INTERNAL)
        finally:
            self.settle.run(ctx)


def build_pipeline(config: GatewayConfig, table: RoutingTable, proxy: Proxy, backends: Backends,
                   metrics: GatewayMetrics, clock: Callable[[], float], rng: random.Random,
                   window: OutcomeWindow, tracer: Tracer = NULL_TRACER) -> Pipeline:
    access = access_enabled(config)
    keys = backends.keys(config)
    m = metrics.access
    caching = config.cache.enabled or semantic_enabled(config)
    stages: list[Stage] = [
        Parse(RequestParser(config), config.server.max_body_bytes),
        Authenticate(keys, m) if keys is not None else OFF,
        Redact(config.redaction, set(config.models), metrics) if config.redaction.enabled else OFF,
        Replay(backends.store, config.streams, config.timeouts.idle_s, m) if access else OFF,
        Guard(build_guards(config), m),
        Route(table, Shedder(config.shedding), config.scrape, metrics, clock, rng, Hold(config.hold, metrics.held, clock)),
        Remember(backends.store, backends.settlement, config.feedback) if config.feedback.enabled else OFF,
        Limit(backends.limiter, config.limits, config.tenants, config.redis, m) if access else OFF,
        Cache(config, backends.store, backends.semantic, m) if caching else OFF,
        Shadow(config.shadow, table, proxy, backends.mirror, backends.embedder() if config.shadow.similarity else None,
               metrics, rng, clock) if config.shadow.models else OFF,
        Forward(proxy, backends.store, config.streams, tapped=access or config.audit.path is not None),
    ]
    accounts = Accounts(backends.settlement, backends.semantic, config, m) if access else NoAccounts()
    settle = Settle(metrics, clock, config.server.log_requests, config.privacy.log_prompts, accounts, window,
                    backends.audit if config.audit.requests else None)
    return Pipeline(stages, settle, clock, tracer)
