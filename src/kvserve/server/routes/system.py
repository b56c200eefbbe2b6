"""GET /health, /ready, /metrics, /version: for orchestrators, scrapers and people."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from kvserve import __version__
from kvserve.server.state import server_state

router = APIRouter()

READY_TIMEOUT_S = 5.0  # a loop that cannot answer between two steps in this long is not ready


@router.get("/health")
async def health() -> JSONResponse:
    """The HTTP process is alive (it answers even while the engine is busy)."""
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """The model is loaded and the engine loop answers between steps."""
    state = server_state(request)
    if await state.engine.check_alive(READY_TIMEOUT_S):
        return JSONResponse({"status": "ready", "model": state.model_name})
    return JSONResponse({"status": "not ready", "reason": state.engine.dead_reason or "engine loop unresponsive"},
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
