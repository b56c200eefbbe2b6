"""An input file checked line by line, as the batch runner stores it.

A line must be a JSON object with a unique non-empty string `custom_id`, `method` POST,
`url` equal to the job's endpoint and an object `body` (not streamed). A line that breaks
a rule becomes its own error-file row, naming the line and the rule, and the job goes on
with the others; the body itself is checked when the line runs, by the endpoint's own
validation (its 400 goes to the error file too). Blank lines are skipped.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from kvserve.server.batches.records import dumps
from kvserve.server.batches.store import Line


@dataclass
class ParsedFile:
    lines: list[Line] = field(default_factory=list)
    error: dict[str, Any] | None = None  # set when the file as a whole is refused (the job fails)


class LineRuleError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_input(data: bytes, endpoint: str, max_lines: int) -> ParsedFile:
    texts = [t for t in data.split(b"\n") if t.strip()]
    if not texts:
        return ParsedFile(error={"code": "empty_file", "message": "The input file has no requests.", "line": None})
    if len(texts) > max_lines:
        message = f"The input file has {len(texts)} requests; at most {max_lines} are allowed."
        return ParsedFile(error={"code": "too_many_lines", "message": message, "line": None})
    parsed, seen = ParsedFile(), set()
    for number, text in enumerate(data.split(b"\n"), start=1):
        if not text.strip():
            continue
        parsed.lines.append(_line(len(parsed.lines), number, text, endpoint, seen))
    return parsed


def _line(idx: int, number: int, text: bytes, endpoint: str, seen: set[str]) -> Line:
    custom_id = None
    try:
        request = _object(text)
        custom_id = request.get("custom_id") if isinstance(request.get("custom_id"), str) else None
        _check_custom_id(custom_id, seen)
        body = _checked_body(request, endpoint)
    except LineRuleError as exc:
        return Line(idx, custom_id, result=error_row(custom_id, exc.code, f"Line {number}: {exc}", number))
    return Line(idx, custom_id, body=dumps(body))


def _object(text: bytes) -> dict[str, Any]:
    try:
        request = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LineRuleError("invalid_json", f"not valid JSON ({exc})") from None
    if not isinstance(request, dict):
        raise LineRuleError("invalid_request", "a request must be a JSON object")
    return request


def _check_custom_id(custom_id: str | None, seen: set[str]) -> None:
    if not custom_id:
        raise LineRuleError("missing_custom_id", "'custom_id' must be a non-empty string")
    if custom_id in seen:
        raise LineRuleError("duplicate_custom_id", f"the custom_id {custom_id!r} is used by an earlier line")
    seen.add(custom_id)


def _checked_body(request: dict[str, Any], endpoint: str) -> dict[str, Any]:
    if request.get("method") != "POST":
        raise LineRuleError("invalid_method", "'method' must be \"POST\"")
    if request.get("url") != endpoint:
        raise LineRuleError("mismatched_url", f"'url' must be the batch's endpoint {endpoint!r}")
    body = request.get("body")
    if not isinstance(body, dict):
        raise LineRuleError("invalid_body", "'body' must be a JSON object")
    if body.get("stream"):
        raise LineRuleError("invalid_body", "streaming is not supported in a batch ('body.stream' must be false)")
    return body


def error_row(custom_id: str | None, code: str, message: str, line: int | None = None) -> str:
    """An error-file row for a line that got no response."""
    return dumps({"id": new_row_id(), "custom_id": custom_id, "response": None,
                  "error": {"code": code, "message": message, "line": line}})


def response_row(custom_id: str | None, status: int, request_id: str, body: Any) -> str:
    """An output- or error-file row for a line the endpoint answered."""
    return dumps({"id": new_row_id(), "custom_id": custom_id,
                  "response": {"status_code": status, "request_id": request_id, "body": body}, "error": None})


def new_row_id() -> str:
    return f"batch_req_{uuid.uuid4().hex}"
