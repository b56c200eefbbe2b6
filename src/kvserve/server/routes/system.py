"""GET /health, /ready, /metrics, /version: for orchestrators, scrapers and people."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from kvserve import __version__
from kvserve.server.state import server_state

router = APIRouter()


@router.get("/health")
async def health() -> JSONResponse:
    """The HTTP process is alive (it answers even while the engine is busy)."""
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Every loaded model's engine process is running (models not loaded load on demand).
    Answered from what this process already knows, never by asking an engine: a busy
    engine (a long step, a big batch) is ready, and a gateway's health check must not
    time out on it."""
    host = server_state(request).models
    for name, version in host.current.items():
        engine = version.engine
        if engine.dead.is_set() or not engine.client.process.is_alive():
            reason = engine.dead_reason or "the engine process is not running"
            return JSONResponse({"status": "not ready", "reason": f"{name}: {reason}"}, status_code=503)
    return JSONResponse({"status": "ready", "model": host.default_name, "models": sorted(host.current)})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = server_state(request)
    default = state.models.current.get(state.models.default_name)
    if default is not None:  # the engine gauges describe the default model's engine
        state.metrics.update_engine(default.engine.stats)
    body, content_type = state.metrics.render()
    return Response(body, media_type=content_type)


@router.get("/version")
async def version() -> JSONResponse:
    return JSONResponse({"version": __version__})
