"""/v1/files: upload (multipart), list, retrieve, content, delete."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from kvserve.server.batches.access import batch_service, list_page, not_found, page_limit
from kvserve.server.batches.files import new_file_id, valid_id
from kvserve.server.batches.records import PURPOSES, FileRecord
from kvserve.server.batches.service import BatchService
from kvserve.server.batches.upload import read_upload
from kvserve.server.errors import bad_request

router = APIRouter()
UPLOAD_PURPOSES = ("batch",)  # what a client may upload here
MAX_FILES_PAGE = 10_000  # OpenAI's default and cap on a page of files


@router.post("/v1/files")
async def create_file(request: Request) -> JSONResponse:
    service = batch_service(request)
    upload = await read_upload(request, service.settings.max_file_bytes)
    if upload.purpose not in UPLOAD_PURPOSES:
        raise bad_request(f"Invalid value for 'purpose': this server accepts {list(UPLOAD_PURPOSES)}.", "purpose",
                          "invalid_value")
    file_id = new_file_id()
    try:
        size = await asyncio.to_thread(service.files.save, file_id, upload.file.file)
    finally:
        await upload.file.close()
    record = FileRecord(file_id, upload.filename, upload.purpose, size, int(time.time()))
    await asyncio.to_thread(service.store.add_file, record)
    return JSONResponse(record.to_openai())


@router.get("/v1/files")
async def list_files(request: Request) -> JSONResponse:
    service = batch_service(request)
    limit, query = page_limit(request, MAX_FILES_PAGE, MAX_FILES_PAGE), request.query_params
    purpose, order = query.get("purpose"), query.get("order", "desc")
    if purpose is not None and purpose not in PURPOSES:
        raise bad_request(f"Invalid value for 'purpose': one of {list(PURPOSES)}.", "purpose", "invalid_value")
    if order not in ("asc", "desc"):
        raise bad_request("Invalid value for 'order': 'asc' or 'desc'.", "order", "invalid_value")
    files = await asyncio.to_thread(service.store.list_files, purpose, query.get("after"), limit + 1, order == "asc")
    return JSONResponse(list_page([f.to_openai() for f in files], limit))


@router.get("/v1/files/{file_id}")
async def retrieve_file(request: Request, file_id: str) -> JSONResponse:
    record = await _file(batch_service(request), file_id)
    return JSONResponse(record.to_openai())


@router.get("/v1/files/{file_id}/content")
async def file_content(request: Request, file_id: str) -> Response:
    service = batch_service(request)
    await _file(service, file_id)
    return FileResponse(service.files.path(file_id), media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}")
async def delete_file(request: Request, file_id: str) -> JSONResponse:
    service = batch_service(request)
    await _file(service, file_id)
    if await asyncio.to_thread(service.store.delete_file, file_id):
        await asyncio.to_thread(service.files.delete, file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


async def _file(service: BatchService, file_id: str) -> FileRecord:
    record = await asyncio.to_thread(service.store.get_file, file_id) if valid_id(file_id) else None
    if record is None:
        raise not_found("file", file_id)
    return record
