"""The FastAPI application of `kvserve serve`: routes over an AsyncLLM, plus middleware."""

from __future__ import annotations

from fastapi import FastAPI

from kvserve import __version__
from kvserve.engine import AsyncLLM
from kvserve.sampling_defaults import SamplingDefaults
from kvserve.server.auth import ApiKeyMiddleware
from kvserve.server.batches.service import open_batches
from kvserve.server.batches.traffic import CountInteractive, InteractiveTraffic
from kvserve.server.errors import install_error_handlers
from kvserve.server.metrics import ServerMetrics
from kvserve.server.openapi import install_openapi
from kvserve.server.request_log import RequestLogMiddleware
from kvserve.server.routes import ROUTERS
from kvserve.server.settings import ServerSettings
from kvserve.server.state import ServerState


def build_app(engine: AsyncLLM, settings: ServerSettings, sampling_defaults: SamplingDefaults | None = None) -> FastAPI:
    """The app; the engine is already started and is shut down by the caller."""
    # /openapi.json only: bodies are parsed by our own strict models, described by server/openapi.py
    app = FastAPI(title="kvserve", version=__version__, docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.kvserve = ServerState(engine, settings, ServerMetrics(engine.served_model_name),
                                     sampling_defaults or SamplingDefaults())
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_openapi(app)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    traffic = InteractiveTraffic()  # batch lines start only while no client's request runs
    app.add_middleware(CountInteractive, traffic=traffic)
    app.add_middleware(RequestLogMiddleware)  # outermost: logs 401s too
    # the runner sends batch lines through the app itself; started and stopped by server/runner.py
    app.state.batches = open_batches(settings.batch_settings(), app, settings.api_key, traffic)
    return app
