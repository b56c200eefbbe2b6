"""The batch API with its state in a real Redis (`--batch-store redis://...`): a job runs
through the `openai` SDK, goes on after Redis stalls past the store's timeout, and a server
killed mid-job (SIGKILL) and restarted on the same store answers every line exactly once."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from tests.gateway.conftest import redis_server  # noqa: F401  (the fixture: a real redis-server)
from tests.helpers import wait_until
from tests.server.conftest import MODEL_NAME, start_server
from tests.server.test_batches import JOB_TIMEOUT_S, chat_line, rows_of, sdk, submit, wait_status


@pytest.fixture(scope="module")
def store_url(redis_server):  # noqa: F811
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}"


def start(tmp_path_factory, model, data_dir, store_url) -> object:
    return start_server(tmp_path_factory, model, "--served-model-name", MODEL_NAME, "--max-model-len", "256",
                        "--data-dir", str(data_dir), "--batch-store", store_url, "--batch-concurrency", "16")


def test_redis_stall_then_sigkill_mid_job_then_restart_answers_every_line_once(tiny_llama, tmp_path_factory,
                                                                                  store_url):
    data_dir = tmp_path_factory.mktemp("batch-data")
    server = start(tmp_path_factory, tiny_llama, data_dir, store_url)
    try:
        client = sdk(server)
        batch = submit(client, [chat_line(f"k-{i}", max_tokens=8) for i in range(300)])
        wait_until(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 20, JOB_TIMEOUT_S,
                   "no progress", step=0.05)
        direct = redis.Redis.from_url(store_url.split("?")[0], decode_responses=True)
        direct.execute_command("CLIENT", "PAUSE", 6000, "ALL")  # longer than the store's 5 s timeout
        time.sleep(6.5)
        before = client.batches.retrieve(batch.id).request_counts.completed  # the job goes on after it
        wait_until(lambda: client.batches.retrieve(batch.id).request_counts.completed >= before + 20,
                   JOB_TIMEOUT_S, "no progress after Redis stalled", step=0.05)
        assert client.batches.retrieve(batch.id).status == "in_progress"
        server.kill()
        prefix = store_url.rsplit("prefix=", 1)[1]
        keys = direct.keys(f"{prefix}:*")
        assert f"{prefix}:batch:{batch.id}" in keys and not (data_dir / "batches.db").exists()
        server = start(tmp_path_factory, tiny_llama, data_dir, store_url)
        client = sdk(server)
        done = wait_status(client, batch.id, ("completed",))
        rows = rows_of(client, done.output_file_id)
        assert len(rows) == 300 and len({r["custom_id"] for r in rows}) == 300
        assert done.request_counts.completed == 300 and done.error_file_id is None
        ran_after_restart = server.logs().count('"path": "/v1/chat/completions"')
        assert 0 < ran_after_restart <= 280  # the lines answered before the kill did not run again
        assert [b.id for b in client.batches.list().data] == [batch.id]
    finally:
        server.stop()


def test_a_server_whose_redis_is_down_serves_without_batches(tiny_llama, tmp_path_factory):
    server = start(tmp_path_factory, tiny_llama, tmp_path_factory.mktemp("batch-data"), "redis://127.0.0.1:1/0")
    try:
        client = sdk(server)
        with pytest.raises(Exception) as caught:
            client.batches.list()
        assert getattr(caught.value, "status_code", None) == 503
        assert caught.value.body["code"] == "batch_store_unavailable"
        answer = client.completions.create(model=MODEL_NAME, prompt="hi", max_tokens=2)
        assert answer.choices[0].finish_reason == "length"  # the rest of the API works
    finally:
        server.stop()
