"""The admin API: POST /admin/models/{name}/versions (hot swap), GET /admin/models/{name}.

Every admin route needs `Authorization: Bearer <admin key>` (--admin-key, else --api-key),
compared in constant time; with neither set the admin API is off (403)."""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from kvserve.openai_error import OpenAIError
from kvserve.server.body import read_body
from kvserve.server.errors import model_not_found
from kvserve.server.protocol import Body
from kvserve.server.state import ServerState, server_state

router = APIRouter()


class SwapRequest(Body):
    version: Annotated[str, Field(min_length=1, max_length=300)]  # NAME:VERSION or NAME@TAG in the registry
    wait: bool = True  # answer once the new version serves (or failed); false: 202 at once
    drain_timeout: Annotated[float, Field(gt=0)] | None = None  # seconds old requests get; None = shutdown_timeout


def require_admin(request: Request, state: ServerState) -> None:
    expected = state.settings.admin_key or state.settings.api_key
    if expected is None:
        raise OpenAIError(403, "The admin API is off: start the server with --admin-key.", "permission_error",
                          code="admin_disabled")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # compare_digest first, so that the time taken does not depend on the scheme either
    if not hmac.compare_digest(token.strip().encode(), expected.encode()) or scheme.lower() != "bearer":
        raise OpenAIError(401, "Incorrect admin key provided.", "invalid_request_error", code="invalid_api_key",
                          headers={"WWW-Authenticate": "Bearer"})


@router.post("/admin/models/{name:path}/versions")
async def swap_version(name: str, request: Request) -> JSONResponse:
    state = server_state(request)
    require_admin(request, state)
    body = await read_body(request, SwapRequest)
    drain = body.drain_timeout if body.drain_timeout is not None else state.settings.shutdown_timeout
    status = await state.models.swap(name, body.version, drain)
    if not body.wait:
        return JSONResponse(_model_status(state, name), status_code=202)
    while status.state == "loading":
        await asyncio.sleep(0.05)
    if status.state == "failed":
        raise OpenAIError(422, f"{status.target} was not loaded; {name} still answers with {state.models.label(name)}: "
                          f"{status.error}", "invalid_request_error", "version", "model_load_failed")
    return JSONResponse(_model_status(state, name))


@router.get("/admin/models/{name:path}")
async def model_status(name: str, request: Request) -> JSONResponse:
    state = server_state(request)
    require_admin(request, state)
    return JSONResponse(_model_status(state, name))


def _model_status(state: ServerState, name: str) -> dict:
    host = state.models
    if name not in host.specs:
        raise model_not_found(name)
    entry = host.pool.entries[name]
    swap = host.swaps.get(name)
    return {"name": name, "version": host.label(name), "state": entry.state.value, "pinned": entry.pinned,
            "in_flight": entry.in_flight, "memory_bytes": entry.bytes, "swap": swap.to_json() if swap else None}
