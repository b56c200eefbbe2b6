"""The batch API through the official `openai` SDK against a real `kvserve serve` (tiny model):
a 1,000-line job, bad lines, size limit, cancel, progress beside interactive requests, and a
SIGKILL mid-job."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
import time

import openai
import pytest

from tests.helpers import wait_until
from tests.server.conftest import MODEL_NAME, start_server
from tests.server.test_docs import DOCS, DOCS_URL

MAX_FILE_BYTES = 1_000_000
JOB_TIMEOUT_S = 120.0


def chat_line(custom_id: str, max_tokens: int = 4, **body) -> dict:
    messages = [{"role": "user", "content": f"Say something about {custom_id}."}]
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL_NAME, "messages": messages, "max_tokens": max_tokens, "ignore_eos": True, **body}}


def jsonl(rows: list) -> bytes:
    return b"".join((row if isinstance(row, bytes) else json.dumps(row).encode()) + b"\n" for row in rows)


def submit(client: openai.OpenAI, rows: list) -> openai.types.Batch:
    uploaded = client.files.create(file=("job.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")


def wait_status(client: openai.OpenAI, batch_id: str, statuses: tuple[str, ...],
                timeout: float = JOB_TIMEOUT_S) -> openai.types.Batch:
    seen = {}
    wait_until(lambda: seen.update(b=client.batches.retrieve(batch_id)) or seen["b"].status in statuses, timeout,
               f"batch {batch_id} never reached {statuses}: {seen.get('b')}", step=0.2)
    return seen["b"]


def rows_of(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def start(tmp_path_factory, model, data_dir) -> object:
    return start_server(tmp_path_factory, model, "--served-model-name", MODEL_NAME, "--max-model-len", "256",
                        "--data-dir", str(data_dir), "--batch-max-file-bytes", str(MAX_FILE_BYTES),
                        "--batch-concurrency", "16")


@pytest.fixture(scope="module")
def servers(tiny_llama, tmp_path_factory):
    """The module's server over one data directory; the last test kills it and starts another."""
    data_dir = tmp_path_factory.mktemp("batch-data")
    running = [start(tmp_path_factory, tiny_llama, data_dir)]
    yield running, lambda: start(tmp_path_factory, tiny_llama, data_dir)
    running[-1].stop()


def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def client(servers) -> openai.OpenAI:
    return sdk(servers[0][0])


def test_thousand_line_job_completes_with_every_line_answered(client):
    batch = submit(client, [chat_line(f"req-{i}") for i in range(1000)])
    assert batch.status == "validating" and batch.endpoint == "/v1/chat/completions"
    done = wait_status(client, batch.id, ("completed", "failed"))
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (1000, 1000, 0)
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.error_file_id is None
    rows = rows_of(client, done.output_file_id)
    assert sorted(r["custom_id"] for r in rows) == sorted(f"req-{i}" for i in range(1000))
    first = rows[0]
    assert first["error"] is None and first["response"]["status_code"] == 200
    assert first["response"]["body"]["object"] == "chat.completion"
    assert first["response"]["body"]["usage"]["completion_tokens"] == 4
    assert first["response"]["request_id"].startswith("chatcmpl-")


def test_malformed_lines_go_to_the_error_file_and_the_job_goes_on(client):
    good = chat_line("good-1")
    rows = [good, b"{not json", chat_line("good-1"), {**chat_line("no-url"), "url": "/v1/embeddings"},
            {**chat_line("get"), "method": "GET"}, {"method": "POST", "url": "/v1/chat/completions", "body": {}},
            chat_line("hot", temperature="hot"), chat_line("good-2")]
    done = wait_status(client, submit(client, rows).id, ("completed", "failed"))
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (8, 2, 6)
    assert sorted(r["custom_id"] for r in rows_of(client, done.output_file_id)) == ["good-1", "good-2"]
    errors = {(r["custom_id"], (r["error"] or {}).get("code")): r for r in rows_of(client, done.error_file_id)}
    assert set(errors) == {(None, "invalid_json"), ("good-1", "duplicate_custom_id"), ("no-url", "mismatched_url"),
                           ("get", "invalid_method"), (None, "missing_custom_id"), ("hot", None)}
    assert errors[(None, "invalid_json")]["error"]["line"] == 2
    hot = errors[("hot", None)]["response"]
    assert hot["status_code"] == 400 and hot["body"]["error"]["param"] == "temperature"


def test_files_over_the_size_limit_get_413(client):
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("big.jsonl", io.BytesIO(b"x" * (MAX_FILE_BYTES + 1))), purpose="batch")
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "file_too_large"


def test_files_and_batches_refuse_bad_input(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("a.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    assert caught.value.body["param"] == "purpose"
    uploaded = client.files.create(file=("a.jsonl", io.BytesIO(jsonl([chat_line("a")]))), purpose="batch")
    for kwargs, param in [(dict(endpoint="/v1/embeddings"), "endpoint"), (dict(completion_window="1h"),
                          "completion_window"), (dict(input_file_id="file-nope"), "input_file_id")]:
        args = dict(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h") | kwargs
        with pytest.raises(openai.BadRequestError) as caught:
            client.batches.create(**args)
        assert caught.value.body["param"] == param
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        client.files.content("../../etc/passwd")


def test_files_list_retrieve_content_delete(client):
    data = jsonl([chat_line("x")])
    uploaded = client.files.create(file=("mine.jsonl", io.BytesIO(data)), purpose="batch")
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose) == (len(data), "mine.jsonl", "batch")
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert client.files.content(uploaded.id).content == data
    assert uploaded.id in [f.id for f in client.files.list(purpose="batch")]
    assert client.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    assert uploaded.id not in [f.id for f in client.files.list()]


def test_cancel_stops_the_job_and_keeps_what_finished(client):
    finished = wait_status(client, submit(client, [chat_line("done-before")]).id, ("completed",))
    batch = submit(client, [chat_line(f"c-{i}", max_tokens=32) for i in range(400)])
    wait_until(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 5, JOB_TIMEOUT_S,
               "no line finished", step=0.1)
    assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    done = wait_status(client, batch.id, ("cancelled",))
    assert done.cancelling_at and done.cancelled_at
    assert 5 <= done.request_counts.completed < 400
    assert len(rows_of(client, done.output_file_id)) == done.request_counts.completed
    assert [b.id for b in client.batches.list(limit=2).data] == [batch.id, finished.id]  # newest first
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(finished.id)


def test_a_job_makes_progress_under_a_steady_interactive_load(client):
    batch = submit(client, [chat_line(f"y-{i}", max_tokens=8) for i in range(300)])
    wait_until(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 1, JOB_TIMEOUT_S,
               "the job did not start", step=0.05)
    samples, streams, stop = [], [[], []], threading.Event()

    def poll(poller=openai.OpenAI(base_url=str(client.base_url), api_key="unused", max_retries=0)) -> None:
        while not stop.is_set():  # (asked, answered, lines done)
            asked = time.monotonic()
            done = poller.batches.retrieve(batch.id).request_counts.completed
            samples.append((asked, time.monotonic(), done))
            time.sleep(0.01)

    def chat(spans: list, until: float) -> None:  # streams back to back: (first chunk, last chunk, finish)
        while time.monotonic() < until:
            stream = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}],
                                                    max_tokens=100, stream=True, extra_body={"ignore_eos": True})
            chunks = [(time.monotonic(), c.choices[0].finish_reason) for c in stream if c.choices]
            spans.append((chunks[0][0], chunks[-1][0], chunks[-1][1]))

    threads = [threading.Thread(target=poll)]
    threads += [threading.Thread(target=chat, args=(spans, time.monotonic() + 3.0)) for spans in streams]
    for thread in threads:
        thread.start()
    for thread in threads[1:]:
        thread.join()
    stop.set()
    threads[0].join()
    assert all(finish == "length" for spans in streams for _, _, finish in spans)  # every answer in full
    # two clients keep an interactive request in the engine all along: the job still moves
    begin, end = max(spans[0][0] for spans in streams), min(spans[-1][1] for spans in streams)
    inside = [done for asked, answered, done in samples if begin <= asked and answered <= end]
    assert len(inside) >= 2 and inside[-1] - inside[0] >= 32, (begin, end, samples)
    assert wait_status(client, batch.id, ("completed",)).request_counts.completed == 300


def test_the_docs_batch_snippet_runs(servers):
    section = DOCS.read_text().split("<!-- batches:begin -->", 1)[1].split("<!-- batches:end -->", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert DOCS_URL in code
    result = subprocess.run([sys.executable, "-c", code.replace(DOCS_URL, servers[0][-1].url)],
                            capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("completed BatchRequestCounts(completed=100")
    printed = [line.split()[0] for line in lines[1:] if line.startswith("sum-")]  # answers may hold newlines
    assert printed == [f"sum-{i}" for i in range(100)]


def test_sigkill_mid_job_then_restart_answers_every_line_once(servers):
    running, restart = servers
    client = sdk(running[-1])
    batch = submit(client, [chat_line(f"k-{i}", max_tokens=8) for i in range(300)])
    wait_until(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 30, JOB_TIMEOUT_S,
               "no progress before the kill", step=0.05)
    running[-1].kill()
    running.append(restart())
    client = sdk(running[-1])
    done = wait_status(client, batch.id, ("completed",))
    rows = rows_of(client, done.output_file_id)
    assert len(rows) == 300 and len({r["custom_id"] for r in rows}) == 300
    assert done.request_counts.completed == 300 and done.error_file_id is None
    ran_after_restart = running[-1].logs().count('"path": "/v1/chat/completions"')
    assert 0 < ran_after_restart <= 270  # the lines answered before the kill did not run again
