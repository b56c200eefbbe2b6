"""The durable state of the batch API in SQLite: files, batches, and each line's answer.

One connection, shared by the event loop's worker threads under a lock (callers run these
methods through `asyncio.to_thread`, so a commit's fsync never stalls the event loop).
WAL with synchronous=FULL: a committed line answer survives a SIGKILL and a power cut.
A transition names the statuses it may start from, so that a cancel and the runner's own
step cannot both win.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kvserve.server.batches.records import ACTIVE, STAMPS, BatchRecord, Counts, FileRecord, dumps

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
  id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes INTEGER NOT NULL,
  created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
  id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL, completion_window TEXT NOT NULL,
  status TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, metadata TEXT, errors TEXT,
  output_file_id TEXT, error_file_id TEXT, in_progress_at INTEGER, finalizing_at INTEGER, completed_at INTEGER,
  failed_at INTEGER, expired_at INTEGER, cancelling_at INTEGER, cancelled_at INTEGER);
CREATE TABLE IF NOT EXISTS lines (
  batch_id TEXT NOT NULL, idx INTEGER NOT NULL, custom_id TEXT, body TEXT,
  done INTEGER NOT NULL DEFAULT 0, ok INTEGER NOT NULL DEFAULT 0, result TEXT,
  PRIMARY KEY (batch_id, idx));
"""
_BATCH_COLUMNS = ("id", "endpoint", "input_file_id", "completion_window", "status", "created_at", "expires_at",
                  "metadata", "errors", "output_file_id", "error_file_id", *STAMPS.values())


@dataclass(frozen=True)
class Line:
    """One input line: `body` is the request to run, or None when `result` (an error row) is its answer."""

    idx: int
    custom_id: str | None
    body: str | None = None
    result: str | None = None


class BatchStore:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def claim(self, root: str) -> bool:
        """The jobs are this server's: the data directory's flock (service.py) already says so."""
        return True

    def _tx(self, statements: Iterable[tuple[str, tuple]]) -> list[int]:
        """Run statements in one transaction; the rows each changed."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                changed = [self._db.execute(sql, args).rowcount for sql, args in statements]
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return changed

    def _tx_if(self, first: tuple[str, tuple], rest: list[tuple[str, tuple]]) -> bool:
        """`first`, and `rest` only if `first` changed a row, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._db.execute(*first).rowcount != 1:
                    self._db.execute("ROLLBACK")
                    return False
                for sql, args in rest:
                    self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return True

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ---- files ----

    def add_file(self, file: FileRecord) -> None:
        self._tx([_insert_file(file)])

    def get_file(self, file_id: str) -> FileRecord | None:
        rows = self._rows("SELECT id, filename, purpose, bytes, created_at FROM files WHERE id = ?", (file_id,))
        return FileRecord(*rows[0]) if rows else None

    def list_files(self, purpose: str | None, after: str | None, limit: int, ascending: bool) -> list[FileRecord]:
        where, args = _cursor("files", after, ascending)
        if purpose is not None:
            where, args = where + " AND purpose = ?", (*args, purpose)
        order = "ASC" if ascending else "DESC"
        sql = f"SELECT id, filename, purpose, bytes, created_at FROM files WHERE {where} ORDER BY rowid {order} LIMIT ?"
        return [FileRecord(*row) for row in self._rows(sql, (*args, limit))]

    def delete_file(self, file_id: str) -> bool:
        return self._tx([("DELETE FROM files WHERE id = ?", (file_id,))])[0] == 1

    # ---- batches ----

    def add_batch(self, batch: BatchRecord) -> None:
        values = _batch_values(batch)
        marks = ", ".join("?" for _ in _BATCH_COLUMNS)
        self._tx([(f"INSERT INTO batches ({', '.join(_BATCH_COLUMNS)}) VALUES ({marks})", values)])

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        rows = self._rows(f"SELECT {', '.join(_BATCH_COLUMNS)} FROM batches WHERE id = ?", (batch_id,))
        return self._batch(rows[0]) if rows else None

    def list_batches(self, after: str | None, limit: int) -> list[BatchRecord]:
        where, args = _cursor("batches", after, ascending=False)
        sql = f"SELECT {', '.join(_BATCH_COLUMNS)} FROM batches WHERE {where} ORDER BY rowid DESC LIMIT ?"
        return [self._batch(row) for row in self._rows(sql, (*args, limit))]

    def next_active(self) -> BatchRecord | None:
        """The oldest job that is not final (jobs run one after another, in order of creation)."""
        marks = ", ".join("?" for _ in ACTIVE)
        rows = self._rows(f"SELECT {', '.join(_BATCH_COLUMNS)} FROM batches WHERE status IN ({marks}) "
                          "ORDER BY rowid LIMIT 1", ACTIVE)
        return self._batch(rows[0]) if rows else None

    def transition(self, batch_id: str, to: str, now: int, sources: tuple[str, ...], **fields: object) -> bool:
        """Move a job to `to` (stamping when) if its status is one of `sources`; False if it was not."""
        return self._tx([_transition(batch_id, to, now, sources, fields)])[0] == 1

    def counts(self, batch_id: str) -> Counts:
        rows = self._rows("SELECT COUNT(*), COALESCE(SUM(done AND ok), 0), COALESCE(SUM(done AND NOT ok), 0) "
                          "FROM lines WHERE batch_id = ?", (batch_id,))
        return Counts(*rows[0])

    def _batch(self, row: tuple) -> BatchRecord:
        values = dict(zip(_BATCH_COLUMNS, row))
        values["metadata"] = json.loads(values["metadata"]) if values["metadata"] else None
        values["errors"] = json.loads(values["errors"]) if values["errors"] else None
        return BatchRecord(**values, counts=self.counts(values["id"]))

    # ---- lines ----

    def start_lines(self, batch_id: str, lines: list[Line], now: int) -> bool:
        """Store a validated job's lines and move it to in_progress, in one transaction."""
        inserts = [("INSERT INTO lines (batch_id, idx, custom_id, body, done, result) VALUES (?, ?, ?, ?, ?, ?)",
                    (batch_id, line.idx, line.custom_id, line.body, int(line.result is not None), line.result))
                   for line in lines]
        moved = _transition(batch_id, "in_progress", now, ("validating",), {})
        return self._tx_if(moved, inserts)

    def pending_lines(self, batch_id: str) -> list[Line]:
        rows = self._rows("SELECT idx, custom_id, body FROM lines WHERE batch_id = ? AND done = 0 ORDER BY idx",
                          (batch_id,))
        return [Line(*row) for row in rows]

    def record_line(self, batch_id: str, idx: int, ok: bool, result: str) -> bool:
        """Commit a line's answer; False if it already had one (it is never answered twice)."""
        sql = "UPDATE lines SET done = 1, ok = ?, result = ?, body = NULL WHERE batch_id = ? AND idx = ? AND done = 0"
        return self._tx([(sql, (int(ok), result, batch_id, idx))])[0] == 1

    def results(self, batch_id: str, ok: bool) -> list[str]:
        rows = self._rows("SELECT result FROM lines WHERE batch_id = ? AND done = 1 AND ok = ? ORDER BY idx",
                          (batch_id, int(ok)))
        return [row[0] for row in rows]

    def finish(self, batch_id: str, to: str, now: int, files: list[FileRecord], **fields: object) -> bool:
        """Register the output files and move the job to its final status, in one transaction."""
        moved = _transition(batch_id, to, now, ("finalizing", "cancelling", "in_progress"), fields)
        return self._tx_if(moved, [_insert_file(f, replace=True) for f in files])


def _insert_file(file: FileRecord, replace: bool = False) -> tuple[str, tuple]:
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    return (f"{verb} INTO files (id, filename, purpose, bytes, created_at) VALUES (?, ?, ?, ?, ?)",
            (file.id, file.filename, file.purpose, file.bytes, file.created_at))


def _batch_values(batch: BatchRecord) -> tuple:
    values = {name: getattr(batch, name) for name in _BATCH_COLUMNS}
    values["metadata"] = dumps(batch.metadata) if batch.metadata is not None else None
    values["errors"] = dumps(batch.errors) if batch.errors else None
    return tuple(values.values())


def _transition(batch_id: str, to: str, now: int, sources: tuple[str, ...], fields: dict) -> tuple[str, tuple]:
    updates = {"status": to, **fields}
    if to in STAMPS:
        updates[STAMPS[to]] = now
    if "errors" in updates:
        updates["errors"] = dumps(updates["errors"])
    sets = ", ".join(f"{name} = ?" for name in updates)
    marks = ", ".join("?" for _ in sources)
    return (f"UPDATE batches SET {sets} WHERE id = ? AND status IN ({marks})",
            (*updates.values(), batch_id, *sources))


def _cursor(table: str, after: str | None, ascending: bool) -> tuple[str, tuple]:
    """The WHERE clause of a page that starts past the row `after` (OpenAI's cursor)."""
    if after is None:
        return "1", ()
    op = ">" if ascending else "<"
    return f"rowid {op} COALESCE((SELECT rowid FROM {table} WHERE id = ?), -1)", (after,)
