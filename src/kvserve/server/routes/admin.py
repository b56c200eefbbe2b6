"""The admin API: POST /admin/models/{name}/versions (hot swap), GET /admin/models/{name}.

Every admin route needs `Authorization: Bearer <admin key>` (--admin-key, else --api-key),
compared in constant time; with neither set the admin API is off (403)."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kvserve.openai_error import OpenAIError
from kvserve.server.body import read_body
from kvserve.server.errors import model_not_found
from kvserve.server.protocol import SwapRequest
from kvserve.server.responses import ModelStatus, SwapState
from kvserve.server.state import ServerState, server_state

router = APIRouter()


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
async def swap_version(name: str, request: Request) -> Response:
    state = server_state(request)
    require_admin(request, state)
    body = await read_body(request, SwapRequest)
    drain = body.drain_timeout if body.drain_timeout is not None else state.settings.shutdown_timeout
    status = await state.models.swap(name, body.version, drain)
    if not body.wait:
        return _json(_model_status(state, name), 202)
    while status.state == "loading":
        await asyncio.sleep(0.05)
    if status.state == "failed":
        raise OpenAIError(422, f"{status.target} was not loaded; {name} still answers with {state.models.label(name)}: "
                          f"{status.error}", "invalid_request_error", "version", "model_load_failed")
    return _json(_model_status(state, name))


@router.get("/admin/models/{name:path}")
async def model_status(name: str, request: Request) -> Response:
    state = server_state(request)
    require_admin(request, state)
    return _json(_model_status(state, name))


def _model_status(state: ServerState, name: str) -> ModelStatus:
    host = state.models
    if name not in host.specs:
        raise model_not_found(name)
    entry = host.pool.entries[name]
    swap = host.swaps.get(name)
    return ModelStatus(name=name, version=host.label(name), state=entry.state.value, pinned=entry.pinned,
                       in_flight=entry.in_flight, memory_bytes=entry.bytes,
                       swap=SwapState(**swap.to_json()) if swap else None)


def _json(status: ModelStatus, code: int = 200) -> Response:
    return Response(status.model_dump_json(), status_code=code, media_type="application/json")
