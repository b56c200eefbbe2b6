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
    """The model is loaded and the engine process is running. Answered from what this
    process already knows, never by asking the engine: a busy engine (a long step, a big
    batch) is ready, and a gateway's health check must not time out on it."""
    state = server_state(request)
    engine = state.engine
    if not engine.dead.is_set() and engine.client.process.is_alive():
        return JSONResponse({"status": "ready", "model": state.model_name})
    return JSONResponse({"status": "not ready", "reason": engine.dead_reason or "the engine process is not running"},
                        status_code=503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = server_state(request)
    state.metrics.update_engine(state.engine.stats)
    body, content_type = state.metrics.render()
    return Response(body, media_type=content_type)


@router.get("/version")
async def version() -> JSONResponse:
    return JSONResponse({"version": __version__})
