"""/v1/files and /v1/batches through `kvserve gateway` to a real `kvserve serve` (tiny model),
with the official `openai` SDK: API keys, tenants apart, per-tenant quotas, size limit."""

from __future__ import annotations

import io

import openai
import pytest

from tests.gateway.conftest import GatewayThread, fast_config, make_key
from tests.server.conftest import MODEL_NAME, start_server
from tests.server.test_batches import chat_line, jsonl, rows_of, submit, wait_status

UPSTREAM_KEY = "upstream-secret"
GATEWAY_MAX_FILE_BYTES = 200_000


@pytest.fixture(scope="module")
def replica(tiny_llama, tmp_path_factory):
    proc = start_server(tmp_path_factory, tiny_llama, "--served-model-name", MODEL_NAME, "--max-model-len", "256",
                        "--api-key", UPSTREAM_KEY, "--batch-concurrency", "16")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.yaml"
    return path, {tenant: make_key(path, tenant) for tenant in ("acme", "globex", "solo", "small")}


@pytest.fixture(scope="module")
def gateway(replica, keys):
    path, _ = keys
    models = {MODEL_NAME: {"pool": {"endpoints": [{"url": replica.url, "api_key": UPSTREAM_KEY}]}}}
    batches = {"enabled": True, "url": replica.url, "api_key": UPSTREAM_KEY, "max_file_bytes": GATEWAY_MAX_FILE_BYTES,
               "tenant_quotas": {"solo": {"max_active_batches": 1}, "small": {"max_lines": 10}}}
    gw = GatewayThread(fast_config(models, auth={"enabled": True, "keys_file": str(path)}, batches=batches)).start()
    yield gw
    gw.stop()


def client_of(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def test_a_job_runs_through_the_gateway(gateway, keys):
    acme = client_of(gateway, keys[1]["acme"])
    done = wait_status(acme, submit(acme, [chat_line(f"g-{i}") for i in range(20)]).id, ("completed", "failed"))
    assert done.status == "completed" and done.request_counts.completed == 20
    assert sorted(r["custom_id"] for r in rows_of(acme, done.output_file_id)) == sorted(f"g-{i}" for i in range(20))
    assert done.id in [b.id for b in acme.batches.list()]


def test_tenants_see_only_their_own_files_and_batches(gateway, keys):
    acme, globex = client_of(gateway, keys[1]["acme"]), client_of(gateway, keys[1]["globex"])
    batch = submit(acme, [chat_line("secret")])
    done = wait_status(acme, batch.id, ("completed",))
    for call in (lambda: globex.batches.retrieve(batch.id), lambda: globex.batches.cancel(batch.id),
                 lambda: globex.files.retrieve(batch.input_file_id), lambda: globex.files.delete(batch.input_file_id),
                 lambda: globex.files.content(done.output_file_id)):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError) as caught:
        globex.batches.create(input_file_id=batch.input_file_id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    assert caught.value.body["param"] == "input_file_id"
    own = globex.files.create(file=("mine.jsonl", io.BytesIO(jsonl([chat_line("x")]))), purpose="batch")
    listed = [f.id for f in globex.files.list()]
    assert own.id in listed and batch.input_file_id not in listed and done.output_file_id not in listed
    assert batch.id not in [b.id for b in globex.batches.list()]
    assert rows_of(acme, done.output_file_id)[0]["custom_id"] == "secret"  # the owner still can


def test_quotas_per_tenant(gateway, keys):
    solo, small = client_of(gateway, keys[1]["solo"]), client_of(gateway, keys[1]["small"])
    first = submit(solo, [chat_line(f"s-{i}", max_tokens=32) for i in range(300)])
    with pytest.raises(openai.RateLimitError) as caught:
        submit(solo, [chat_line("s-more")])
    assert caught.value.body["code"] == "batch_quota_exceeded"
    solo.batches.cancel(first.id)
    wait_status(solo, first.id, ("cancelled",))
    wait_status(solo, submit(solo, [chat_line("s-after")]).id, ("completed",))  # a slot again
    with pytest.raises(openai.RateLimitError):
        submit(small, [chat_line(f"l-{i}") for i in range(11)])
    assert wait_status(small, submit(small, [chat_line(f"l-{i}") for i in range(10)]).id,
                       ("completed",)).request_counts.completed == 10


def test_keys_and_size_limit_at_the_gateway(gateway, keys):
    with pytest.raises(openai.AuthenticationError):
        client_of(gateway, "sk-kvs-000000000000-nope").files.list()
    acme = client_of(gateway, keys[1]["acme"])
    with pytest.raises(openai.APIStatusError) as caught:
        acme.files.create(file=("big.jsonl", io.BytesIO(b"x" * (GATEWAY_MAX_FILE_BYTES + 70_000))), purpose="batch")
    assert caught.value.status_code == 413 and caught.value.body["code"] == "file_too_large"
