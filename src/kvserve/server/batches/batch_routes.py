"""/v1/batches: create, retrieve, list, cancel."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from kvserve.openai_error import OpenAIError
from kvserve.server.batches.access import batch_service, list_page, not_found, page_limit
from kvserve.server.batches.files import valid_id
from kvserve.server.batches.records import COMPLETION_WINDOWS, ENDPOINTS, BatchRecord
from kvserve.server.batches.service import BatchService
from kvserve.server.body import read_body
from kvserve.server.errors import bad_request
from kvserve.server.protocol import Body

router = APIRouter()
MAX_METADATA = 16  # OpenAI's limits on metadata: pairs, key and value lengths
MAX_KEY, MAX_VALUE = 64, 512
BATCH_PAGE, MAX_BATCH_PAGE = 20, 100
CANCELLABLE = ("validating", "in_progress")


class CreateBatch(Body):
    input_file_id: str = Field(max_length=200)
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None


@router.post("/v1/batches")
async def create_batch(request: Request) -> JSONResponse:
    service = batch_service(request)
    body = await read_body(request, CreateBatch)
    _check(body)
    source = None
    if valid_id(body.input_file_id):
        source = await asyncio.to_thread(service.store.get_file, body.input_file_id)
    if source is None or source.purpose != "batch":
        raise bad_request(f"No file with purpose 'batch' has the id '{body.input_file_id}'.", "input_file_id",
                          "invalid_value")
    now = int(time.time())
    batch = BatchRecord(f"batch_{uuid.uuid4().hex}", body.endpoint, body.input_file_id, body.completion_window,
                        "validating", now, now + COMPLETION_WINDOWS[body.completion_window], body.metadata)
    await asyncio.to_thread(service.store.add_batch, batch)
    service.runner.wake()
    return JSONResponse(batch.to_openai())


@router.get("/v1/batches")
async def list_batches(request: Request) -> JSONResponse:
    service = batch_service(request)
    limit = page_limit(request, BATCH_PAGE, MAX_BATCH_PAGE)
    batches = await asyncio.to_thread(service.store.list_batches, request.query_params.get("after"), limit + 1)
    return JSONResponse(list_page([b.to_openai() for b in batches], limit))


@router.get("/v1/batches/{batch_id}")
async def retrieve_batch(request: Request, batch_id: str) -> JSONResponse:
    batch = await _batch(batch_service(request), batch_id)
    return JSONResponse(batch.to_openai())


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str) -> JSONResponse:
    service = batch_service(request)
    batch = await _batch(service, batch_id)
    if batch.status in CANCELLABLE:
        if await asyncio.to_thread(service.store.transition, batch_id, "cancelling", int(time.time()), CANCELLABLE):
            service.runner.cancel(batch_id)
        batch = await _batch(service, batch_id)
    elif batch.status not in ("cancelling", "cancelled"):
        raise OpenAIError(409, f"Cannot cancel a batch with status '{batch.status}'.", "invalid_request_error",
                          code="batch_not_cancellable")
    return JSONResponse(batch.to_openai())


def _check(body: CreateBatch) -> None:
    if body.endpoint not in ENDPOINTS:
        raise bad_request(f"Invalid value for 'endpoint': one of {list(ENDPOINTS)}.", "endpoint", "invalid_value")
    if body.completion_window not in COMPLETION_WINDOWS:
        raise bad_request(f"Invalid value for 'completion_window': one of {list(COMPLETION_WINDOWS)}.",
                          "completion_window", "invalid_value")
    metadata = body.metadata or {}
    if len(metadata) > MAX_METADATA or any(len(k) > MAX_KEY or len(v) > MAX_VALUE for k, v in metadata.items()):
        raise bad_request(f"Invalid value for 'metadata': at most {MAX_METADATA} pairs, keys of at most {MAX_KEY} "
                          f"characters and values of at most {MAX_VALUE}.", "metadata", "invalid_value")


async def _batch(service: BatchService, batch_id: str) -> BatchRecord:
    batch = await asyncio.to_thread(service.store.get_batch, batch_id)
    if batch is None:
        raise not_found("batch", batch_id)
    return batch
