"""The audit log's admin lines: every admin call that changes something or was refused."""

from __future__ import annotations

import json
from typing import Any

from kvserve.gateway.audit import AuditLog

MAX_BODY = 4096  # a larger request body is recorded as its size only


def audit_admin(audit: AuditLog | None, method: str, path: str, status: int, body: dict[str, Any]) -> None:
    """Record a change (POST) or a refusal (any method, status >= 400); reads that worked are not recorded."""
    if audit is None or (method == "GET" and status < 400):
        return
    text = json.dumps(body)
    recorded: Any = body if len(text) <= MAX_BODY else {"bytes": len(text)}
    audit.admin(path.removeprefix("/admin/"), status, method=method, body=recorded)
