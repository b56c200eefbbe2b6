"""The audit log: append-only JSON lines of admin actions and of every request's metadata,
chained by hashes so that an edited, deleted or reordered line is detectable.

Each line is one JSON object: `time` (UTC, RFC 3339), `kind` (`request`, `admin` or `rollout`), the
fields of the event, `prev` (the `hash` of the line before; 64 zeros on the first line of
a log) and `hash`, the SHA-256 of the line's own JSON without `hash`. Loki, Elasticsearch
and the like ingest the lines as they are. A request line carries metadata only (tenant,
key id, model, version, tokens, status, latency), never prompt or answer text.

A hash chain without a secret proves order and completeness, not authorship: whoever can
rewrite the file can rewrite the chain after the line they change. Ship the lines to an
append-only sink as they are written; `kvserve audit verify` then checks a copy against
itself, and any line that does not match what was shipped stands out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterable

log = logging.getLogger("kvserve.gateway")
GENESIS = "0" * 64
TAIL_BYTES = 1 << 16  # enough to hold a log's last line, read when appending to it


def seal(record: dict[str, Any], prev: str) -> tuple[bytes, str]:
    """One line (with its newline) for `record`, chained to `prev`, and its hash."""
    raw = json.dumps({**record, "prev": prev}, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(raw.encode()).hexdigest()
    return (raw[:-1] + f',"hash":"{digest}"}}\n').encode(), digest


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """Writes sealed lines to `sink` (a file opened for append, or stdout), one write and flush
    per line, so a crash loses at most the line being written."""

    def __init__(self, sink: IO[bytes], prev: str = GENESIS, clock: Callable[[], float] = time.time,
                 owned: bool = True) -> None:
        self.sink = sink
        self.prev = prev
        self.clock = clock
        self.owned = owned

    @classmethod
    def open(cls, path: str) -> AuditLog:
        """Append to `path` ("-": stdout), continuing the chain of the lines already there."""
        if path == "-":
            return cls(sys.stdout.buffer, owned=False)
        file = Path(path)
        prev = last_hash(file) if file.exists() else GENESIS
        return cls(file.open("ab"), prev)

    def write(self, kind: str, fields: dict[str, Any]) -> None:
        line, self.prev = seal({"time": rfc3339(self.clock()), "kind": kind, **fields}, self.prev)
        try:
            self.sink.write(line)
            self.sink.flush()
        except (OSError, ValueError) as exc:  # a full disk must not fail requests; it is logged
            log.error("audit log write failed: %s", exc)

    def admin(self, action: str, status: int, **fields: Any) -> None:
        self.write("admin", {"action": action, "status": status, **fields})

    def close(self) -> None:
        if self.owned:
            self.sink.close()


def last_hash(path: Path) -> str:
    """The `hash` of a log's last line (GENESIS for an empty file, the raw line's SHA-256 for
    a damaged one, so that verifying the joined log points at the damage)."""
    with path.open("rb") as f:
        f.seek(max(0, os.path.getsize(path) - TAIL_BYTES))
        lines = f.read().rstrip(b"\n").split(b"\n")
    if not lines[-1]:
        return GENESIS
    try:
        return str(json.loads(lines[-1])["hash"])
    except (ValueError, KeyError, TypeError):
        return hashlib.sha256(lines[-1]).hexdigest()


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based
    reason: str


def verify(lines: Iterable[bytes], first_prev: str = GENESIS) -> tuple[int, list[Problem]]:
    """Check a log: each line's own hash, and each `prev` against the line before
    (`first_prev` for the first). Returns the number of lines and the problems found."""
    problems: list[Problem] = []
    expected, count = first_prev, 0
    for count, raw in enumerate(lines, 1):
        text = raw.rstrip(b"\n")
        try:
            record = json.loads(text)
            digest = record.pop("hash")
        except (ValueError, KeyError, TypeError, AttributeError):
            problems.append(Problem(count, "not a sealed JSON line"))
            expected = hashlib.sha256(text).hexdigest()
            continue
        own = seal({k: v for k, v in record.items() if k != "prev"}, record.get("prev", ""))[1]
        if own != digest:
            problems.append(Problem(count, "its content does not match its hash: the line was edited"))
        if record.get("prev") != expected:
            problems.append(Problem(count, "its prev is not the hash of the line before: a line was "
                                           "deleted, reordered or edited before it"))
        expected = digest
    return count, problems
