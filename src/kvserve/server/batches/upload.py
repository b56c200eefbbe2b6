"""A `multipart/form-data` upload (`file` and `purpose`, as the OpenAI SDK sends them) read
under a size limit: 413 as soon as the bytes received pass it, before they are all read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from kvserve.openai_error import OpenAIError
from kvserve.server.errors import bad_request

FORM_OVERHEAD = 64 * 1024  # room for the multipart boundaries, part headers and the purpose field
MAX_FILENAME = 255


@dataclass
class Upload:
    file: UploadFile
    filename: str
    purpose: str


async def read_upload(request: Request, max_file_bytes: int) -> Upload:
    limit = max_file_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(max_file_bytes)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise bad_request("Files are uploaded as multipart/form-data with the fields 'file' and 'purpose'.",
                          code="invalid_content_type")
    parser = MultiPartParser(request.headers, _bounded(request, limit, max_file_bytes), max_files=1, max_fields=4)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise bad_request(f"The upload is not valid multipart/form-data: {exc.message}") from None
    file, purpose = form.get("file"), form.get("purpose")
    if not isinstance(file, UploadFile):
        raise bad_request("Missing required parameter: 'file'.", "file", "missing_required_parameter")
    if not isinstance(purpose, str):
        raise bad_request("Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter")
    if file.size is not None and file.size > max_file_bytes:
        raise too_large(max_file_bytes)
    return Upload(file, (file.filename or "upload.jsonl")[:MAX_FILENAME], purpose)


async def _bounded(request: Request, limit: int, max_file_bytes: int) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large(max_file_bytes)
        yield chunk


def too_large(max_file_bytes: int) -> OpenAIError:
    return OpenAIError(413, f"The file is larger than this server accepts ({max_file_bytes} bytes).",
                       "invalid_request_error", "file", "file_too_large")
