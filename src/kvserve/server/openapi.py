"""The OpenAPI document of `kvserve serve` (GET /openapi.json).

Handlers read their bodies themselves (body.read_body: size-bounded, then the strict
protocol models), so FastAPI cannot see them; this document adds each route's request
body, its answer and the error body from the same pydantic models the handlers use.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from kvserve.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    SwapRequest,
    TokenizeRequest,
)
from kvserve.server.responses import (
    ChatCompletion,
    Completion,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    ModelStatus,
    TokenizeResponse,
)

REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """What every 4xx and 5xx carries."""

    error: ErrorDetail


# (path, method) -> (request body model or None, answer model, answer streams as SSE)
OPERATIONS: dict[tuple[str, str], tuple[type[BaseModel] | None, type[BaseModel], bool]] = {
    ("/v1/chat/completions", "post"): (ChatCompletionRequest, ChatCompletion, True),
    ("/v1/completions", "post"): (CompletionRequest, Completion, True),
    ("/tokenize", "post"): (TokenizeRequest, TokenizeResponse, False),
    ("/detokenize", "post"): (DetokenizeRequest, DetokenizeResponse, False),
    ("/v1/models", "get"): (None, ModelList, False),
    ("/v1/models/{model_id}", "get"): (None, ModelCard, False),
    ("/admin/models/{name}/versions", "post"): (SwapRequest, ModelStatus, False),
    ("/admin/models/{name}", "get"): (None, ModelStatus, False),
}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The app's routes from FastAPI, with the bodies and answers filled in from our models."""
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description="OpenAI-compatible API of kvserve serve")
    doc["paths"] = {path.replace("{model_id:path}", "{model_id}"): item for path, item in doc["paths"].items()}
    doc.setdefault("components", {})["schemas"] = _schemas()
    for (path, method), (body, answer, streams) in OPERATIONS.items():
        operation = doc["paths"][path][method]
        operation.pop("requestBody", None)
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
        operation["responses"] = _responses(answer, streams)
    return doc


def install_openapi(app: FastAPI) -> None:
    """Serve the document at /openapi.json, built once on first use."""
    document: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not document:
            document.update(openapi_document(app))
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _schemas() -> dict[str, Any]:
    models = {body for body, _, _ in OPERATIONS.values() if body} | {a for _, a, _ in OPERATIONS.values()}
    pairs = [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)] + [(ErrorBody, "serialization")]
    _, top = models_json_schema(pairs, ref_template=REF)
    return top["$defs"]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _responses(answer: type[BaseModel], streams: bool) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": _ref(answer)}}
    if streams:  # with "stream": true: data: <chunk> events, then data: [DONE]
        content["text/event-stream"] = {"schema": {"type": "string"}}
    error = {"description": "an OpenAI-shaped error", "content": {"application/json": {"schema": _ref(ErrorBody)}}}
    return {"200": {"description": "the answer", "content": content}, "4XX": error, "5XX": error}
