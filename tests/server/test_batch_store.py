"""The batch stores (SQLite and Redis, the same tests) and the input-line rules, without a
server: a line is answered once, transitions only leave the statuses they name, a reopened
store sees what was committed, bad lines become error rows."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from kvserve.server.batches.lines import parse_input
from kvserve.server.batches.records import BatchRecord, FileRecord
from kvserve.server.batches.redis_store import FINISHED_TTL_S, RedisBatchStore, StoreUnavailable
from kvserve.server.batches.store import BatchStore, Line
from kvserve.server.batches.stores import open_store
from tests.gateway.conftest import redis_server  # noqa: F401  (the fixture: a real redis-server)


@pytest.fixture(params=["sqlite", "redis"])
def reopen(request, tmp_path):
    """Opens the store (again: what a restarted server sees); one store per test."""
    if request.param == "sqlite":
        return lambda: open_store(None, tmp_path)
    url = f"{request.getfixturevalue('redis_server').url}?prefix=t{uuid.uuid4().hex[:12]}"
    return lambda: open_store(url, tmp_path)


def job(store, batch_id: str = "batch_1") -> BatchRecord:
    batch = BatchRecord(batch_id, "/v1/completions", "file-x", "24h", "validating", 100, 100 + 86400,
                        metadata={"k": "v"})
    store.add_batch(batch)
    return batch


def test_a_line_is_answered_once_and_counts_follow_the_rows(reopen):
    store = reopen()
    job(store)
    assert store.start_lines("batch_1", [Line(0, "a", body="{}"), Line(1, "b", body="{}"),
                                         Line(2, None, result='{"bad": 1}')], now=101)
    assert not store.start_lines("batch_1", [], now=102)  # no longer validating
    assert [line.idx for line in store.pending_lines("batch_1")] == [0, 1]
    assert store.record_line("batch_1", 0, True, '{"first": 1}')
    assert not store.record_line("batch_1", 0, True, '{"again": 1}')
    counts = store.get_batch("batch_1").counts
    assert (counts.total, counts.completed, counts.failed) == (3, 1, 1)
    assert store.results("batch_1", ok=True) == ['{"first": 1}']
    assert store.results("batch_1", ok=False) == ['{"bad": 1}']
    store.close()
    reopened = reopen()  # what a restarted server sees
    assert reopened.pending_lines("batch_1") == [Line(1, "b", body="{}")]
    batch = reopened.get_batch("batch_1")
    assert (batch.status, batch.in_progress_at, batch.metadata) == ("in_progress", 101, {"k": "v"})


def test_racing_answers_to_one_line_commit_exactly_one(reopen):
    store = reopen()
    job(store)
    store.start_lines("batch_1", [Line(i, f"c{i}", body="{}") for i in range(20)], now=101)
    wins, barrier = [], threading.Barrier(4)

    def answer(worker: int) -> None:
        barrier.wait()
        wins.extend((worker, i) for i in range(20) if store.record_line("batch_1", i, True, f'"{worker}"'))

    threads = [threading.Thread(target=answer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(i for _, i in wins) == list(range(20))  # each line once, whoever won it
    assert store.get_batch("batch_1").counts.completed == 20 and store.pending_lines("batch_1") == []


def test_transitions_leave_only_the_statuses_they_name(reopen):
    store = reopen()
    job(store)
    job(store, "batch_2")
    assert store.next_active().id == "batch_1"  # the oldest first
    assert store.transition("batch_1", "cancelling", 105, ("validating", "in_progress"))
    assert not store.transition("batch_1", "finalizing", 106, ("in_progress",))
    output = FileRecord("file-" + "0" * 32 + "-output", "out.jsonl", "batch_output", 10, 107)
    assert store.finish("batch_1", "cancelled", 107, [output], output_file_id=output.id)
    assert not store.finish("batch_1", "cancelled", 108, [])
    batch = store.get_batch("batch_1")
    assert (batch.status, batch.cancelling_at, batch.cancelled_at, batch.finalizing_at) == ("cancelled", 105, 107, None)
    assert batch.output_file_id == output.id and store.get_file(output.id) == output
    assert store.next_active().id == "batch_2"
    assert [b.id for b in store.list_batches(None, 10)] == ["batch_2", "batch_1"]
    assert [b.id for b in store.list_batches("batch_2", 10)] == ["batch_1"]


def test_files_list_in_order_filter_by_purpose_and_delete(reopen):
    store = reopen()
    records = [FileRecord(f"file-{i:032x}", f"f{i}.jsonl", "batch" if i % 2 else "batch_output", i, 100 + i)
               for i in range(5)]
    for record in records:
        store.add_file(record)
    assert store.list_files(None, None, 10, ascending=True) == records
    assert store.list_files("batch", None, 10, ascending=False) == [records[3], records[1]]
    assert store.list_files(None, records[1].id, 2, ascending=True) == records[2:4]
    assert store.delete_file(records[0].id) and not store.delete_file(records[0].id)
    assert store.get_file(records[0].id) is None


def test_redis_finished_jobs_expire_and_drop_their_lines(redis_server):  # noqa: F811
    prefix = f"t{uuid.uuid4().hex[:12]}"
    store = RedisBatchStore(f"{redis_server.url}?prefix={prefix}")
    job(store)
    store.start_lines("batch_1", [Line(0, "a", body="{}")], now=101)
    store.record_line("batch_1", 0, True, "{}")
    store.transition("batch_1", "finalizing", 102, ("in_progress",))
    assert store.finish("batch_1", "completed", 103, [])
    keys = set(store._r.keys(f"{prefix}:*"))
    assert not any(":lines:" in k or ":pending:" in k or ":results:" in k for k in keys)
    for kind in ("batch", "counts"):
        assert 0 < store._r.ttl(f"{prefix}:{kind}:batch_1") <= FINISHED_TTL_S
    store._r.delete(f"{prefix}:batch:batch_1")  # as if its TTL ran out
    assert store.list_batches(None, 10) == [] and store.get_batch("batch_1") is None


def test_redis_lease_keeps_a_second_server_off_the_jobs(redis_server):  # noqa: F811
    url = f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}"
    first, second, restarted = RedisBatchStore(url), RedisBatchStore(url), RedisBatchStore(url)
    assert first.claim("/data/a")
    assert not second.claim("/data/b")  # another data directory: another server
    assert restarted.claim("/data/a")  # the same one, restarted: it takes its jobs back at once
    job(restarted)
    restarted.start_lines("batch_1", [Line(0, "a", body="{}"), Line(1, "b", body="{}")], now=101)
    assert restarted.record_line("batch_1", 0, True, "{}")
    restarted._r.set(restarted._k("owner"), "elsewhere:/data/b")  # its lease lapsed; another took it
    with pytest.raises(StoreUnavailable):
        restarted.record_line("batch_1", 1, True, "{}")
    assert [line.idx for line in restarted.pending_lines("batch_1")] == [1]  # left for the holder
    for store in (first, second, restarted):
        store.close()


def test_redis_down_is_a_503_shaped_error():
    store = RedisBatchStore("redis://127.0.0.1:1/0")  # nothing listens on port 1
    with pytest.raises(StoreUnavailable) as caught:
        store.get_batch("batch_1")
    assert caught.value.status == 503 and caught.value.code == "batch_store_unavailable"


def test_sqlite_is_the_default_store(tmp_path):
    store = open_store(None, tmp_path)
    assert isinstance(store, BatchStore) and (tmp_path / "batches.db").exists()


def test_bad_lines_become_error_rows_naming_the_line():
    good = {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": "hi"}}
    data = b"\n".join([json.dumps(good).encode(), b"", b"[1, 2]", json.dumps(good).encode(),
                       json.dumps({**good, "custom_id": "s", "body": {"prompt": "x", "stream": True}}).encode()])
    parsed = parse_input(data, "/v1/completions", max_lines=10)
    assert parsed.error is None and [line.idx for line in parsed.lines] == [0, 1, 2, 3]
    assert json.loads(parsed.lines[0].body) == {"prompt": "hi"} and parsed.lines[0].result is None
    errors = [json.loads(line.result)["error"] for line in parsed.lines[1:]]
    assert [(e["code"], e["line"]) for e in errors] == [("invalid_request", 3), ("duplicate_custom_id", 4),
                                                       ("invalid_body", 5)]
    assert parse_input(b"\n\n", "/v1/completions", 10).error["code"] == "empty_file"
    assert parse_input(data, "/v1/completions", 3).error["code"] == "too_many_lines"
