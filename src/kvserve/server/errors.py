"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` for every failure.

Handlers raise `kvserve.openai_error.OpenAIError`; `install_error_handlers` turns it, unknown routes, engine
errors and any unexpected exception into that body (never a traceback for the client).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from kvserve.engine import EngineDeadError, QueueFullError, RequestAbortedError, RequestTimeoutError
from kvserve.server.protocol import ParamError
from kvserve.openai_error import OpenAIError
from kvserve.server.request_log import STATE_KEY

logger = logging.getLogger("kvserve.server")

RETRY_AFTER_S = 1  # what a 503 for a full queue asks the client to wait


def json_response(error: OpenAIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, "invalid_request_error", param, code)


def model_not_found(name: str) -> OpenAIError:
    return OpenAIError(404, f"The model `{name}` does not exist.", "invalid_request_error", "model", "model_not_found")


def model_unavailable(message: str, code: str, retry_after_s: int) -> OpenAIError:
    """503 for a model that is not in memory and cannot be right now (loading, no room)."""
    return OpenAIError(503, message, "service_unavailable_error", "model", code,
                       headers={"Retry-After": str(retry_after_s)})


def from_engine_error(exc: BaseException) -> OpenAIError:
    """Map what AsyncLLM raises onto HTTP: full queue, engine gone or server stopping 503,
    timeout 408, refused prompt 400."""
    if isinstance(exc, QueueFullError):
        return OpenAIError(503, f"The server is overloaded: {exc}. Retry later.", "service_unavailable_error",
                        code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, RequestTimeoutError):
        return OpenAIError(408, str(exc), "timeout_error", "request_timeout", "request_timeout")
    if isinstance(exc, EngineDeadError):
        return OpenAIError(503, "The engine is not running.", "service_unavailable_error", code="engine_dead")
    if isinstance(exc, RequestAbortedError):
        return OpenAIError(503, f"The request was ended before it finished: {exc}. Retry it.",
                           "service_unavailable_error", code="server_shutting_down")
    if isinstance(exc, ValueError):
        return bad_request(str(exc))
    return OpenAIError(500, "Internal server error.", "internal_server_error")


def parse_body(model: type[BaseModel], raw: bytes) -> Any:
    """Validate a JSON body; any problem becomes a 400 that names the field."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def from_validation_error(exc: ValidationError) -> OpenAIError:
    error = max(exc.errors(include_url=False), key=_telling)
    kind, loc = error["type"], _field_path(error["loc"])
    param = loc or None
    if kind == "json_invalid":
        return bad_request("We could not parse the JSON body of your request: " + error["msg"], code="invalid_json")
    if kind in ("model_type", "model_attributes_type") and not loc:
        return bad_request("The request body must be a JSON object.", code="invalid_json")
    if kind == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {loc}", param, "unknown_parameter")
    if kind == "missing":
        return bad_request(f"Missing required parameter: '{loc}'.", param, "missing_required_parameter")
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ParamError):
        return bad_request(str(cause), cause.param, "invalid_value")
    message = error["msg"].removeprefix("Value error, ")
    got = f" (got {error['input']!r})" if _short(error.get("input")) else ""
    return bad_request(f"Invalid value for '{loc}': {message}{got}", param, "invalid_value")


def _telling(error: dict[str, Any]) -> tuple[int, bool]:
    """A union field fails once per member: the deepest failure says the most
    ("content[0].type: Input should be 'text'"), a wrong value more than a missing key."""
    path = _field_path(error["loc"])
    return path.count(".") + path.count("["), error["type"] not in ("extra_forbidden", "missing")


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "null"}


def _field_path(loc: tuple[int | str, ...]) -> str:
    """('messages', 0, 'content', 'str') -> 'messages[0].content' (union tags dropped)."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in _UNION_TAGS and "[" not in part and "-" not in part:
            path += f".{part}" if path else part
    return path


def _short(value: object) -> bool:
    return isinstance(value, (int, float, str, bool)) and len(repr(value)) <= 80


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpenAIError)
    record = request.scope.get("state", {}).get(STATE_KEY)
    if record is not None:
        record.error = exc.message
        record.outcome = record.outcome or "error"
    return json_response(exc)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = "invalid_request_error" if exc.status_code < 500 else "internal_server_error"
    codes = {404: "not_found", 405: "method_not_allowed"}
    error = OpenAIError(exc.status_code, str(exc.detail), kind, code=codes.get(exc.status_code))
    return JSONResponse(error.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_response(OpenAIError(500, "Internal server error.", "internal_server_error"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OpenAIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
