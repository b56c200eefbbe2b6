"""What the file and batch routes share: the service of this app, list pages, 404s."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from kvserve.openai_error import OpenAIError
from kvserve.server.batches.service import BatchService, Unavailable
from kvserve.server.errors import bad_request


def batch_service(request: Request) -> BatchService:
    service: BatchService | Unavailable = request.app.state.batches
    if isinstance(service, Unavailable):
        raise service.reason
    return service


def not_found(kind: str, object_id: str) -> OpenAIError:
    return OpenAIError(404, f"No {kind} found with id '{object_id[:100]}'.", "invalid_request_error", "id", "not_found")


def page_limit(request: Request, default: int, maximum: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise bad_request(f"Invalid value for 'limit': it must be an integer in 1..{maximum}.", "limit",
                          "invalid_value")
    return int(raw)


def list_page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """OpenAI's cursor page over `limit + 1` fetched items (the extra one says there are more)."""
    data = items[:limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(items) > limit}
