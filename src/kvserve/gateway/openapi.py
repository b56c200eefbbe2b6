"""The gateway's OpenAPI document (`GET /openapi.json`): the request bodies it reads, with
the model names of its config (each also as model@version), and the routes its config
turns on (`/v1/feedback`, `/v1/files`, `/v1/batches`).

Bodies allow fields beyond those listed: the gateway forwards them, the upstream
judges them. Every error answer has OpenAI's error body.
"""

from __future__ import annotations

import json
from typing import Any

from kvserve.gateway.config import GatewayConfig
from kvserve.gateway.routing.table import RoutingTable
from kvserve.gateway.routing.versions import VERSION_SEPARATOR

NULLABLE_INT = {"type": ["integer", "null"], "minimum": 1}
TEXT_PART = {"type": "object", "required": ["type", "text"],
             "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}}
MESSAGE = {
    "type": "object", "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": TEXT_PART}]},
        "name": {"type": "string"},
    },
}
SAMPLING = {
    "stream": {"type": ["boolean", "null"]},
    "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {"type": ["boolean", "null"]}}},
    "max_tokens": NULLABLE_INT,
    "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
    "top_p": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
    "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 4},
    "seed": {"type": ["integer", "null"]},
    "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                       {"type": "null"}]},
    "user": {"type": "string"},
}
CHAT = {"type": "object", "required": ["model", "messages"],
        "properties": {**SAMPLING, "messages": {"type": "array", "items": MESSAGE, "minItems": 1},
                       "max_completion_tokens": NULLABLE_INT}}
COMPLETION = {"type": "object", "required": ["model", "prompt"],
              "properties": {**SAMPLING, "prompt": {"anyOf": [
                  {"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}}}


def with_models(body: dict[str, Any], names: list[str]) -> dict[str, Any]:
    model = {"type": "string", "enum": names, "description": "a model the gateway serves, or model@version"}
    return {**body, "properties": {"model": model, **body["properties"]}}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "param", "code"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {}}}}}
JSON_ERROR = {"description": "an OpenAI-shaped error", "content": {"application/json": {"schema": ERROR}}}


FEEDBACK = {
    "type": "object", "required": ["id"],
    "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 256,
                          "description": "the x-request-id header of the answer scored"},
                   "score": {"type": "number", "minimum": 0, "maximum": 1},
                   "thumbs": {"type": "string", "enum": ["up", "down"]}},
    "oneOf": [{"required": ["score"], "not": {"required": ["thumbs"]}},
              {"required": ["thumbs"], "not": {"required": ["score"]}}],
}
BATCH = {
    "type": "object", "required": ["input_file_id", "endpoint", "completion_window"],
    "properties": {"input_file_id": {"type": "string"},
                   "endpoint": {"type": "string", "enum": ["/v1/chat/completions", "/v1/completions"]},
                   "completion_window": {"type": "string", "enum": ["24h"]},
                   "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}}},
}
UPLOAD = {"type": "object", "required": ["file", "purpose"],
          "properties": {"file": {"type": "string", "format": "binary"},
                         "purpose": {"type": "string", "enum": ["batch"]}}}
ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,100}$"}


def operation(summary: str, statuses: tuple[int, ...], body: dict[str, Any] | None = None,
              content_type: str = "application/json", path_id: str | None = None) -> dict[str, Any]:
    """One keyed route's operation: its body (if any), a JSON 200 and OpenAI-shaped errors."""
    op: dict[str, Any] = {
        "summary": summary, "security": [{"bearer": []}, {}],
        "responses": {"200": {"description": summary, "content": {"application/json": {"schema": {"type": "object"}}}},
                      **{str(status): JSON_ERROR for status in statuses}},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {content_type: {"schema": body}}}
    if path_id is not None:
        op["parameters"] = [{"name": path_id, "in": "path", "required": True, "schema": ID}]
    return op


def feedback_routes() -> dict[str, Any]:
    return {"/v1/feedback": {"post": operation("a client's score of an answer, kept per model version",
                                               (400, 401, 404, 409, 413, 503), FEEDBACK)}}


def batch_routes() -> dict[str, Any]:
    """OpenAI's file and batch API, passed to `batches.url` with tenants kept apart."""
    refused = (400, 401, 403, 404, 413, 429, 502, 503)
    return {
        "/v1/files": {"post": operation("upload a JSONL file of batch requests", refused, UPLOAD,
                                        "multipart/form-data"),
                      "get": operation("the tenant's files", refused)},
        "/v1/files/{file_id}": {"get": operation("one of the tenant's files", refused, path_id="file_id"),
                                "delete": operation("delete one of the tenant's files", refused, path_id="file_id")},
        "/v1/files/{file_id}/content": {"get": operation("a file's content", refused, path_id="file_id")},
        "/v1/batches": {"post": operation("create a batch job from an uploaded file", refused, BATCH),
                        "get": operation("the tenant's batch jobs", refused)},
        "/v1/batches/{batch_id}": {"get": operation("one of the tenant's batch jobs", refused, path_id="batch_id")},
        "/v1/batches/{batch_id}/cancel": {"post": operation("cancel a batch job", refused, path_id="batch_id")},
    }


def completion_route(summary: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"post": {
        "summary": summary,
        "security": [{"bearer": []}, {}],
        "parameters": [
            {"name": "x-request-id", "in": "header", "required": False, "schema": {"type": "string"}},
            {"name": "x-model-version", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "200": {"description": "the answer (JSON, or an SSE stream when `stream` is true)",
                    "content": {"application/json": {"schema": {"type": "object"}},
                                "text/event-stream": {"schema": {"type": "string"}}}},
            **{str(status): JSON_ERROR for status in (400, 401, 403, 404, 409, 413, 429, 502, 503, 504)},
        },
    }}


def get_route(summary: str, content_type: str = "application/json") -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": {"description": summary, "content": {
        content_type: {"schema": {"type": "object"} if content_type == "application/json" else {"type": "string"}}}},
        "503": {"description": "not ready"}}}}


def document(table: RoutingTable, config: GatewayConfig) -> bytes:
    names = [n for name, model in table.models.items()
             for n in (name, *(f"{name}{VERSION_SEPARATOR}{v}" for v in model.versions))]
    doc = spec(names)
    if config.feedback.enabled:
        doc["paths"].update(feedback_routes())
    if config.batches.enabled:
        doc["paths"].update(batch_routes())
    return json.dumps(doc).encode()


def spec(names: list[str]) -> dict[str, Any]:
    """The document of the routes every gateway answers."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "kvserve gateway", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/v1/chat/completions": completion_route("a chat completion, through the pipeline",
                                                     with_models(CHAT, names)),
            "/v1/completions": completion_route("a text completion, through the pipeline",
                                                with_models(COMPLETION, names)),
            "/v1/models": get_route("the models and their versions"),
            "/health": get_route("the gateway process is up"),
            "/ready": get_route("some endpoint can take traffic"),
            "/metrics": get_route("Prometheus metrics", "text/plain"),
        },
    }

