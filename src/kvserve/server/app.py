"""The FastAPI application of `kvserve serve`: routes over the served models, plus middleware."""

from __future__ import annotations

from fastapi import FastAPI

from kvserve import __version__
from kvserve.console.files import ConsoleMiddleware
from kvserve.server.auth import ApiKeyMiddleware
from kvserve.server.batches.service import open_batches
from kvserve.server.batches.traffic import CountInteractive, InteractiveTraffic
from kvserve.server.errors import install_error_handlers
from kvserve.server.metrics import ServerMetrics
from kvserve.server.model_host import ModelHost
from kvserve.server.model_lease import ModelLeaseMiddleware
from kvserve.server.openapi import install_openapi
from kvserve.server.request_log import STATE_KEY, RequestLogMiddleware
from kvserve.server.routes import ROUTERS
from kvserve.server.settings import ServerSettings
from kvserve.server.state import ServerState
from kvserve.tracing import NULL_TRACER, Tracer
from kvserve.tracing.middleware import TracingMiddleware


def build_app(host: ModelHost, settings: ServerSettings, tracer: Tracer = NULL_TRACER) -> FastAPI:
    """The app; the host has started its models and is shut down by the caller (the tracer too)."""
    # /openapi.json only: bodies are parsed by our own strict models, described by server/openapi.py
    app = FastAPI(title="kvserve", version=__version__, docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.kvserve = ServerState(host, settings, ServerMetrics(host.default_name))
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_openapi(app)
    app.add_middleware(ModelLeaseMiddleware)  # inside the key check: a refused request holds no model
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.add_middleware(ConsoleMiddleware)  # /console/: static pages, before the API key check
    if tracer is not NULL_TRACER:
        app.add_middleware(TracingMiddleware, tracer=tracer, record_key=STATE_KEY)  # inside the log: 401s traced
    traffic = InteractiveTraffic()  # while clients are answered, fewer batch lines run
    app.add_middleware(CountInteractive, traffic=traffic)
    app.add_middleware(RequestLogMiddleware)  # outermost: logs 401s too
    # the runner sends batch lines through the app itself; started and stopped by server/runner.py
    app.state.batches = open_batches(settings.batch_settings(), app, settings.api_key, traffic)
    return app
