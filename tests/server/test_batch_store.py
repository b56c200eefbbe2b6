"""The batch store and the input-line rules, without a server: a line is answered once,
transitions only leave the statuses they name, bad lines become error rows."""

from __future__ import annotations

import json

from kvserve.server.batches.lines import parse_input
from kvserve.server.batches.records import BatchRecord
from kvserve.server.batches.store import BatchStore, Line


def job(store: BatchStore, batch_id: str = "batch_1") -> BatchRecord:
    batch = BatchRecord(batch_id, "/v1/completions", "file-x", "24h", "validating", 100, 100 + 86400)
    store.add_batch(batch)
    return batch


def test_a_line_is_answered_once_and_counts_follow_the_rows(tmp_path):
    store = BatchStore(tmp_path / "b.db")
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
    store.close()
    reopened = BatchStore(tmp_path / "b.db")  # what a restarted server sees
    assert [line.idx for line in reopened.pending_lines("batch_1")] == [1]
    assert reopened.get_batch("batch_1").status == "in_progress"


def test_transitions_leave_only_the_statuses_they_name(tmp_path):
    store = BatchStore(tmp_path / "b.db")
    job(store)
    assert store.transition("batch_1", "cancelling", 105, ("validating", "in_progress"))
    assert not store.transition("batch_1", "finalizing", 106, ("in_progress",))
    assert store.finish("batch_1", "cancelled", 107, [])
    batch = store.get_batch("batch_1")
    assert (batch.status, batch.cancelling_at, batch.cancelled_at, batch.finalizing_at) == ("cancelled", 105, 107, None)
    assert store.next_active() is None


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
