"""The rows of the batch store and their OpenAI JSON shapes (FileObject, Batch)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# a job's statuses; ACTIVE ones are the runner's to advance, the others are final
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
FINAL = ("completed", "failed", "cancelled", "expired")
# the timestamp field each status sets when the job enters it
STAMPS = {"in_progress": "in_progress_at", "finalizing": "finalizing_at", "completed": "completed_at",
          "failed": "failed_at", "cancelling": "cancelling_at", "cancelled": "cancelled_at",
          "expired": "expired_at"}
ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
COMPLETION_WINDOWS = {"24h": 24 * 3600}
PURPOSES = ("batch", "batch_output")  # what an upload may declare; batch_output is ours to write


@dataclass(frozen=True)
class FileRecord:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "expires_at": None, "status_details": None}


@dataclass(frozen=True)
class Counts:
    total: int = 0
    completed: int = 0
    failed: int = 0


@dataclass
class BatchRecord:
    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    created_at: int
    expires_at: int
    metadata: dict[str, str] | None = None
    errors: list[dict[str, Any]] | None = None  # why a job failed as a whole (empty file, ...)
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    counts: Counts = field(default_factory=Counts)

    def to_openai(self) -> dict[str, Any]:
        body = asdict(self)
        body.pop("counts")
        body["object"] = "batch"
        body["request_counts"] = asdict(self.counts)
        body["errors"] = {"object": "list", "data": self.errors} if self.errors else None
        return body


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
