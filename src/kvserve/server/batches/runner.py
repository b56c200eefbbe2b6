"""The batch runner: one asyncio task in `kvserve serve` that takes jobs through their statuses.

    validating → in_progress → finalizing → completed       (or failed: the file is refused)
    cancelling → cancelled,   in_progress past expires_at → expired

Jobs run one after another, oldest first; a job's lines run `concurrency` at a time
(`busy_concurrency` while clients' requests are being answered, and traffic.HOLD_S after:
each line's decode shares their decode steps), each submitted at BATCH_PRIORITY: the engine's priority scheduler runs them in the room
interactive requests leave (slots, KV blocks, token budget), admits an interactive request
before they get their tokens and preempts them first when it needs room, so a job makes
progress under a steady interactive load without delaying its admission. A line's answer
is committed before it counts; a 503 (engine overloaded or stopping) is no answer, and the
line runs again. The runner's state is the store's: after a restart it picks up the oldest active job and runs
the lines that have no answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from kvserve.server.batches.files import FileDir
from kvserve.server.batches.lines import error_row, parse_input, response_row
from kvserve.server.batches.records import BatchRecord, FileRecord
from kvserve.server.batches.settings import BatchSettings
from kvserve.server.batches.redis_store import StoreUnavailable
from kvserve.server.batches.store import Line
from kvserve.server.batches.traffic import InteractiveTraffic
from kvserve.server.batches.stores import Store

logger = logging.getLogger("kvserve.batches")

Result = tuple[int, str, Any]  # HTTP status, request id, response body
Execute = Callable[[str, dict[str, Any]], Awaitable[Result]]
RETRY_STATUSES = frozenset({503})  # overloaded or stopping: the line gets no answer yet
RETRY_S = 1.0  # wait before running such a line again
ROOM_POLL_S = 0.05  # a line held back by busy_concurrency looks again this often
FINAL_OF = {"finalizing": "completed", "cancelling": "cancelled", "in_progress": "expired"}


class BatchRunner:
    def __init__(self, store: Store, files: FileDir, execute: Execute, settings: BatchSettings,
                 traffic: InteractiveTraffic | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store, self.files, self.execute = store, files, execute
        self.traffic = traffic or InteractiveTraffic()
        self.running = 0  # lines in the engine now
        self.settings, self.clock = settings, clock
        self._wake = asyncio.Event()
        self._halted: set[str] = set()  # jobs cancelled while their lines run
        self._workers: set[asyncio.Task] = set()
        self._current: str | None = None  # the job whose lines run now

    def wake(self) -> None:
        """A job was created or changed: look again."""
        self._wake.set()

    def cancel(self, batch_id: str) -> None:
        """Stop the lines of a job whose status is now cancelling (those in the engine are aborted)."""
        self._halted.add(batch_id)
        if batch_id == self._current:
            for task in self._workers:
                task.cancel()
        self.wake()

    async def run(self) -> None:
        while True:
            try:
                batch = await asyncio.to_thread(self.store.next_active)
            except StoreUnavailable:
                await self._store_down()
                continue
            if batch is None:
                await self._wake.wait()
                self._wake.clear()
                continue
            try:
                await self._step(batch)
            except StoreUnavailable:  # nothing is lost: the store's state is where the job resumes
                await self._store_down()
            except Exception:  # a bug: fail this job rather than loop on it
                logger.exception("batch %s failed", batch.id)
                await asyncio.to_thread(self.store.transition, batch.id, "failed", self._now(), (batch.status,),
                                        errors=[{"code": "internal_error", "message": "The batch runner failed.",
                                                 "line": None}])

    async def _store_down(self) -> None:
        logger.warning("batch store unavailable: jobs resume when it answers again")
        await asyncio.sleep(RETRY_S)

    async def _step(self, batch: BatchRecord) -> None:
        if batch.status == "validating":
            await self._validate(batch)
        elif batch.status == "in_progress":
            await self._run_lines(batch)
        else:
            await self._finalize(batch, FINAL_OF[batch.status])

    def _now(self) -> int:
        return int(self.clock())

    async def _validate(self, batch: BatchRecord) -> None:
        data = await asyncio.to_thread(self.files.read, batch.input_file_id)
        if data is None:
            error = {"code": "file_not_found", "message": f"The input file {batch.input_file_id} is gone.",
                     "line": None}
            await asyncio.to_thread(self.store.transition, batch.id, "failed", self._now(), ("validating",),
                                    errors=[error])
            return
        parsed = await asyncio.to_thread(parse_input, data, batch.endpoint, self.settings.max_lines)
        if parsed.error is not None:
            await asyncio.to_thread(self.store.transition, batch.id, "failed", self._now(), ("validating",),
                                    errors=[parsed.error])
            return
        await asyncio.to_thread(self.store.start_lines, batch.id, parsed.lines, self._now())

    async def _run_lines(self, batch: BatchRecord) -> None:
        pending = iter(await asyncio.to_thread(self.store.pending_lines, batch.id))
        self._current = batch.id
        self._workers = {asyncio.create_task(self._work(batch, pending)) for _ in range(self.settings.concurrency)}
        try:
            await asyncio.wait(self._workers, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t.exception() for t in self._workers if t.done() and not t.cancelled() and t.exception()]
        finally:
            for task in self._workers:
                task.cancel()
            self._workers, self._current = set(), None
        if failed:  # a line got no answer (the store went away): the job is not done
            raise failed[0]
        if batch.id in self._halted:
            self._halted.discard(batch.id)
            return  # cancelling: the next look finalizes it
        if self._now() >= batch.expires_at:
            await self._expire(batch)
            return
        await asyncio.to_thread(self.store.transition, batch.id, "finalizing", self._now(), ("in_progress",))

    async def _work(self, batch: BatchRecord, pending: Iterator[Line]) -> None:
        while True:
            await self._room()
            line = next(pending, None)  # shared by the workers: each line is taken once
            if line is None:
                return
            self.running += 1
            try:
                if not await self._answer(batch, line):
                    return
            finally:
                self.running -= 1

    async def _room(self) -> None:
        """Wait while clients' requests are being answered (or were a moment ago: traffic.HOLD_S)
        and busy_concurrency lines already run."""
        while self.traffic.busy() and self.running >= self.settings.busy_concurrency:
            await asyncio.sleep(ROOM_POLL_S)

    async def _answer(self, batch: BatchRecord, line: Line) -> bool:
        """Run a line until it has an answer and commit it; False if the job stopped first."""
        body = json.loads(line.body or "{}")
        while True:
            if batch.id in self._halted or self._now() >= batch.expires_at:
                return False
            try:
                outcome = await self.execute(batch.endpoint, body)
            except Exception:  # a bug in the endpoint: answer the line, keep the job going
                logger.exception("batch %s line %d failed", batch.id, line.idx)
                row = error_row(line.custom_id, "internal_error", "The request failed inside the server.")
                await asyncio.to_thread(self.store.record_line, batch.id, line.idx, False, row)
                return True
            if outcome[0] not in RETRY_STATUSES:
                break
            await asyncio.sleep(RETRY_S)
        status, request_id, response = outcome
        row = response_row(line.custom_id, status, request_id, response)
        await asyncio.to_thread(self.store.record_line, batch.id, line.idx, status == 200, row)
        return True

    async def _expire(self, batch: BatchRecord) -> None:
        for line in await asyncio.to_thread(self.store.pending_lines, batch.id):
            row = error_row(line.custom_id, "batch_expired", "This line was not executed before the batch expired.")
            await asyncio.to_thread(self.store.record_line, batch.id, line.idx, False, row)
        await self._finalize(batch, "expired")

    async def _finalize(self, batch: BatchRecord, to: str) -> None:
        """Write the output and error files from the stored answers (once: their ids are the job's)."""
        now, files, ids = self._now(), [], {}
        for ok, kind, field in ((True, "output", "output_file_id"), (False, "errors", "error_file_id")):
            rows = await asyncio.to_thread(self.store.results, batch.id, ok)
            if rows:
                file_id = self.files.result_id(batch.id, kind)
                size = await asyncio.to_thread(self.files.write, file_id, rows)
                files.append(FileRecord(file_id, f"{batch.id}_{kind}.jsonl", "batch_output", size, now))
                ids[field] = file_id
        await asyncio.to_thread(self.store.finish, batch.id, to, now, files, **ids)
        self._halted.discard(batch.id)
        logger.info("batch %s %s", batch.id, to)
