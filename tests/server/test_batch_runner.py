"""The batch runner's line concurrency, on a real SQLite store and file directory, with an
`execute` that stands where the server's own app answers each line: while clients'
requests are in flight only `busy_concurrency` lines run, and all `concurrency` otherwise."""

from __future__ import annotations

import asyncio
import time

from kvserve.server.batches.files import FileDir
from kvserve.server.batches.records import BatchRecord
from kvserve.server.batches.runner import BatchRunner
from kvserve.server.batches.settings import BatchSettings
from kvserve.server.batches.store import Line
from kvserve.server.batches.stores import open_store
from kvserve.server.batches.traffic import HOLD_S, InteractiveTraffic


def run_job(tmp_path, interactive: int, lines: int = 24, ended_s_ago: float | None = None) -> tuple[int, int]:
    """(most lines running at once, lines answered) for a job run with `interactive` client requests in flight
    (and, with `ended_s_ago`, one that ended that long before)."""
    store = open_store(None, tmp_path)
    batch = BatchRecord("batch_1", "/v1/completions", "file-x", "24h", "validating", 100, 10**12)
    store.add_batch(batch)
    store.start_lines("batch_1", [Line(i, f"c{i}", body="{}") for i in range(lines)], now=101)
    traffic = InteractiveTraffic()
    traffic.in_flight = interactive
    if ended_s_ago is not None:
        traffic.last_end = time.monotonic() - ended_s_ago
    running, most = 0, 0

    async def execute(endpoint, body):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        return 200, "req", {"ok": True}

    runner = BatchRunner(store, FileDir(tmp_path / "files"), execute,
                         BatchSettings(concurrency=8, busy_concurrency=2), traffic)
    asyncio.run(runner._run_lines(store.get_batch("batch_1")))
    answered = store.get_batch("batch_1").counts.completed
    store.close()
    return most, answered


def test_all_lines_run_at_full_concurrency_when_no_client_is_answered(tmp_path):
    assert run_job(tmp_path, interactive=0) == (8, 24)


def test_only_busy_concurrency_lines_run_while_clients_are_answered(tmp_path):
    assert run_job(tmp_path, interactive=1) == (2, 24)


def test_lines_stay_at_busy_concurrency_in_a_pause_between_clients_requests(tmp_path):
    (tmp_path / "pause").mkdir()
    (tmp_path / "quiet").mkdir()
    assert run_job(tmp_path / "pause", interactive=0, ended_s_ago=0.0) == (2, 24)
    assert run_job(tmp_path / "quiet", interactive=0, ended_s_ago=HOLD_S + 1) == (8, 24)
