"""The batch state in Redis: the SQLite store's interface and guarantees (store.py), for
servers whose local disk is not where state should live.

Keys, all under a prefix (`kvserve:batches` unless the URL says `?prefix=NAME`):

    seq                  a counter: the order of files and jobs (SQLite's rowid)
    file:<id>            hash: a file's record          files    zset of file ids by seq
    batch:<id>           hash: a job's record (JSON)    batches  zset of job ids by seq
    active               zset of the jobs not final, by seq (the runner takes the oldest)
    counts:<id>          hash: total, completed, failed
    lines:<id>           hash: idx -> [custom_id, body] of the lines without an answer
    pending:<id>         zset of those idx               results:<id>  hash: idx -> answer
    owner                the lease of the server that runs the jobs

A line's answer is recorded by one Lua script (taken from `pending` only if it is still
there, and only while this server holds the lease), so it is never answered twice; a transition checks the job's status and applies
its writes in one WATCH/MULTI transaction, so that a cancel and the runner's own step
cannot both win. A job that reaches a final status drops its line data (its answers are
in its output and error files by then) and its record and counts expire FINISHED_TTL_S
later. Durability is Redis's: with `appendonly yes` an answer survives a Redis restart.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis
from redis.client import Pipeline

from kvserve.openai_error import OpenAIError
from kvserve.server.batches.records import ACTIVE, FINAL, STAMPS, BatchRecord, Counts, FileRecord, dumps
from kvserve.server.batches.store import Line

PREFIX = "kvserve:batches"
FINISHED_TTL_S = 30 * 24 * 3600  # a final job's record and counts, then they expire
LEASE_S = 30  # a server's claim on the jobs lasts this long unless renewed (every third of it)
PAGE = 100  # ids read at a time when a listing skips some

# KEYS: pending, lines, results, counts, owner; ARGV: idx, answer row, the count to raise,
# this server's identity ('' before it claims: no lease to hold)
RECORD_LINE = """
if ARGV[4] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[4] then return -1 end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[4], ARGV[3], 1)
return 1
"""
# KEYS: owner; ARGV: this server's identity, lease in ms. Taken if free or already ours.
CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_FILE_FIELDS = ("id", "filename", "purpose", "bytes", "created_at")
RECORD_OF = {"files": "file", "batches": "batch"}  # a listing's zset -> the key kind of its records


class StoreUnavailable(OpenAIError):
    """Redis did not answer: the batch API answers 503 and the runner tries again later."""

    def __init__(self) -> None:
        super().__init__(503, "The batch store is unavailable; try again later.", "service_unavailable_error",
                         code="batch_store_unavailable")


def _guarded(method: Callable) -> Callable:
    """Redis's connection errors become StoreUnavailable."""
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable() from exc
    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


class RedisBatchStore:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.prefix = parse_qs(parts.query).get("prefix", [PREFIX])[0]
        plain = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        self._r = redis.Redis.from_url(plain, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
        self._record_line = self._r.register_script(RECORD_LINE)
        self._claim = self._r.register_script(CLAIM)
        self._stop = threading.Event()
        self._identity: str | None = None

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def close(self) -> None:
        self._stop.set()
        self._r.close()

    @_guarded
    def claim(self, root: str) -> bool:
        """Take the lease on these jobs for this host's data directory `root` (a server
        restarted there takes over its own lease at once) and keep renewing it; False if
        another server holds it."""
        self._identity = f"{socket.gethostname()}:{root}"
        if not self._claim(keys=[self._k("owner")], args=[self._identity, LEASE_S * 1000]):
            return False
        threading.Thread(target=self._renew, name="batch-store-lease", daemon=True).start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 3):
            try:
                self._claim(keys=[self._k("owner")], args=[self._identity, LEASE_S * 1000])
            except (redis.ConnectionError, redis.TimeoutError):
                continue  # renewed on the next turn if Redis is back

    # ---- files ----

    @_guarded
    def add_file(self, file: FileRecord) -> None:
        seq = self._r.incr(self._k("seq"))
        with self._r.pipeline() as pipe:
            _put_file(pipe, self._k("file", file.id), file)
            pipe.zadd(self._k("files"), {file.id: seq})
            pipe.execute()

    @_guarded
    def get_file(self, file_id: str) -> FileRecord | None:
        return _file(self._r.hgetall(self._k("file", file_id)))

    @_guarded
    def list_files(self, purpose: str | None, after: str | None, limit: int, ascending: bool) -> list[FileRecord]:
        files = (self.get_file(i) for i in self._ids("files", after, ascending))
        return _take((f for f in files if f is not None and purpose in (None, f.purpose)), limit)

    @_guarded
    def delete_file(self, file_id: str) -> bool:
        with self._r.pipeline() as pipe:
            pipe.delete(self._k("file", file_id))
            pipe.zrem(self._k("files"), file_id)
            return pipe.execute()[0] == 1

    # ---- batches ----

    @_guarded
    def add_batch(self, batch: BatchRecord) -> None:
        seq = self._r.incr(self._k("seq"))
        with self._r.pipeline() as pipe:
            pipe.hset(self._k("batch", batch.id), mapping=_batch_fields(batch))
            pipe.zadd(self._k("batches"), {batch.id: seq})
            if batch.status in ACTIVE:
                pipe.zadd(self._k("active"), {batch.id: seq})
            pipe.execute()

    @_guarded
    def get_batch(self, batch_id: str) -> BatchRecord | None:
        fields = self._r.hgetall(self._k("batch", batch_id))
        if not fields:
            return None
        values = {name: json.loads(value) for name, value in fields.items()}
        return BatchRecord(**values, counts=self.counts(batch_id))

    @_guarded
    def list_batches(self, after: str | None, limit: int) -> list[BatchRecord]:
        batches = (self.get_batch(i) for i in self._ids("batches", after, ascending=False))
        return _take((b for b in batches if b is not None), limit)  # expired ones are skipped

    @_guarded
    def next_active(self) -> BatchRecord | None:
        """The oldest job that is not final (jobs run one after another, in order of creation)."""
        first = self._r.zrange(self._k("active"), 0, 0)
        return self.get_batch(first[0]) if first else None

    @_guarded
    def transition(self, batch_id: str, to: str, now: int, sources: tuple[str, ...], **fields: object) -> bool:
        """Move a job to `to` (stamping when) if its status is one of `sources`; False if it was not."""
        return self._if_status(batch_id, sources, lambda pipe: self._move(pipe, batch_id, to, now, fields))

    @_guarded
    def counts(self, batch_id: str) -> Counts:
        values = self._r.hmget(self._k("counts", batch_id), ["total", "completed", "failed"])
        return Counts(*(int(v or 0) for v in values))

    # ---- lines ----

    @_guarded
    def start_lines(self, batch_id: str, lines: list[Line], now: int) -> bool:
        """Store a validated job's lines and move it to in_progress, in one transaction."""
        def writes(pipe: Pipeline) -> None:
            todo = [line for line in lines if line.result is None]
            answered = {line.idx: "0" + line.result for line in lines if line.result is not None}
            for chunk in _chunks(todo, 1000):
                pipe.hset(self._k("lines", batch_id), mapping={l.idx: dumps([l.custom_id, l.body]) for l in chunk})
                pipe.zadd(self._k("pending", batch_id), {l.idx: l.idx for l in chunk})
            if answered:
                pipe.hset(self._k("results", batch_id), mapping=answered)
            pipe.hset(self._k("counts", batch_id), mapping={"total": len(lines), "completed": 0,
                                                             "failed": len(answered)})
            self._move(pipe, batch_id, "in_progress", now, {})
        return self._if_status(batch_id, ("validating",), writes)

    @_guarded
    def pending_lines(self, batch_id: str) -> list[Line]:
        idxs = self._r.zrange(self._k("pending", batch_id), 0, -1)
        bodies = self._r.hmget(self._k("lines", batch_id), idxs) if idxs else []
        return [Line(int(i), *json.loads(b)) for i, b in zip(idxs, bodies) if b is not None]

    @_guarded
    def record_line(self, batch_id: str, idx: int, ok: bool, result: str) -> bool:
        """Commit a line's answer; False if it already had one (it is never answered twice)."""
        keys = [self._k(kind, batch_id) for kind in ("pending", "lines", "results", "counts")] + [self._k("owner")]
        recorded = self._record_line(keys=keys, args=[idx, ("1" if ok else "0") + result,
                                                      "completed" if ok else "failed", self._identity or ""])
        if recorded == -1:  # the lease lapsed (Redis stalled past it) and another server may run the job
            raise StoreUnavailable()
        return recorded == 1

    @_guarded
    def results(self, batch_id: str, ok: bool) -> list[str]:
        rows = self._r.hgetall(self._k("results", batch_id))
        mark = "1" if ok else "0"
        return [row[1:] for _, row in sorted(rows.items(), key=lambda kv: int(kv[0])) if row[0] == mark]

    @_guarded
    def finish(self, batch_id: str, to: str, now: int, files: list[FileRecord], **fields: object) -> bool:
        """Register the output files and move the job to its final status, in one transaction."""
        def writes(pipe: Pipeline) -> None:
            for file in files:
                _put_file(pipe, self._k("file", file.id), file)
                pipe.zadd(self._k("files"), {file.id: self._r.incr(self._k("seq"))}, nx=True)
            self._move(pipe, batch_id, to, now, fields)
        return self._if_status(batch_id, ("finalizing", "cancelling", "in_progress"), writes)

    # ---- helpers ----

    def _if_status(self, batch_id: str, sources: tuple[str, ...], writes: Callable[[Pipeline], None]) -> bool:
        """`writes` in one transaction if the job's status is one of `sources` (checked under WATCH)."""
        key = self._k("batch", batch_id)
        with self._r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    status = pipe.hget(key, "status")
                    if status is None or json.loads(status) not in sources:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    writes(pipe)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue  # the job changed in between: look again

    def _move(self, pipe: Pipeline, batch_id: str, to: str, now: int, fields: dict) -> None:
        updates = {"status": to, **fields}
        if to in STAMPS:
            updates[STAMPS[to]] = now
        pipe.hset(self._k("batch", batch_id), mapping={name: dumps(v) for name, v in updates.items()})
        if to in FINAL:
            pipe.zrem(self._k("active"), batch_id)
            pipe.delete(*(self._k(kind, batch_id) for kind in ("lines", "pending", "results")))
            pipe.expire(self._k("batch", batch_id), FINISHED_TTL_S)
            pipe.expire(self._k("counts", batch_id), FINISHED_TTL_S)

    def _ids(self, zset: str, after: str | None, ascending: bool) -> Iterator[str]:
        """Ids of a zset past the id `after` (OpenAI's cursor), in order, read a page at a time;
        ids whose record expired are dropped from the zset on the way."""
        key = self._k(zset)
        bound = "-inf" if ascending else "+inf"
        if after is not None:
            score = self._r.zscore(key, after)
            if score is None:
                return
            bound = f"({score}"
        while True:
            page = (self._r.zrangebyscore(key, bound, "+inf", start=0, num=PAGE, withscores=True) if ascending
                    else self._r.zrevrangebyscore(key, bound, "-inf", start=0, num=PAGE, withscores=True))
            if not page:
                return
            for member, score in page:
                if not self._r.exists(self._k(RECORD_OF[zset], member)):
                    self._r.zrem(key, member)
                    continue
                yield member
            bound = f"({page[-1][1]}"


def _put_file(pipe: Pipeline, key: str, file: FileRecord) -> None:
    pipe.hset(key, mapping={name: getattr(file, name) for name in _FILE_FIELDS})


def _file(fields: dict[str, str]) -> FileRecord | None:
    if not fields:
        return None
    return FileRecord(fields["id"], fields["filename"], fields["purpose"], int(fields["bytes"]),
                      int(fields["created_at"]))


def _batch_fields(batch: BatchRecord) -> dict[str, str]:
    values = {name: getattr(batch, name) for name in BatchRecord.__dataclass_fields__ if name != "counts"}
    return {name: dumps(value) for name, value in values.items()}


def _take(items: Iterator, limit: int) -> list:
    out = []
    for item in items:
        if len(out) == limit:
            break
        out.append(item)
    return out


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
