"""The audit log: a real gateway writes hash-chained lines of requests and admin actions (never
prompt or answer text), and `kvserve audit verify` finds an edited, a deleted and a reordered line."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from kvserve.cli.main import main
from kvserve.gateway.audit import GENESIS, AuditLog, verify
from tests.helpers import kvserve, wait_until

from .conftest import ADMIN_KEY, bearer, chat, fast_config, make_key

SECRET_PROMPT = "my card is 4111 1111 1111 1111"


@pytest.fixture(scope="module")
def audit_file(tmp_path_factory) -> Path:
    """A log written by a real gateway: one request per tenant, a refused request, admin calls."""
    from kvserve.bench.fake_upstream import FakeUpstreamConfig, FakeUpstreamServer
    from tests.gateway.conftest import GatewayThread

    tmp = tmp_path_factory.mktemp("audit")
    path, keys = tmp / "audit.jsonl", tmp / "keys.yaml"
    up = FakeUpstreamServer(FakeUpstreamConfig(num_tokens=5, tokens_per_second=0)).start()
    models = {"fake": {"versions": {"v1": {"pool": {"endpoints": [up.url]}}, "v2": {"weight": 0, "pool": {
        "endpoints": [up.url]}}}}}
    tenant_keys = [make_key(keys, tenant=tenant) for tenant in ("acme", "globex")]
    gw = GatewayThread(fast_config(models, auth={"enabled": True, "keys_file": str(keys)},
                                   audit={"path": str(path)})).start()
    try:
        for key in tenant_keys:
            assert httpx.post(gw.url + "/v1/chat/completions", json=chat(content=SECRET_PROMPT),
                              headers=bearer(key)).status_code == 200
        assert httpx.post(gw.url + "/v1/chat/completions", json=chat(), headers=bearer("sk-wrong")).status_code == 401
        assert httpx.post(gw.url + "/admin/weights", json={"model": "fake", "weights": {"v2": 10}},
                          headers=bearer(ADMIN_KEY)).status_code == 200
        assert httpx.post(gw.url + "/admin/weights", json={}, headers=bearer("not-the-admin-key")).status_code == 401
        wait_until(lambda: len(path.read_text().splitlines()) == 5, 5, "not every event was written")
    finally:
        gw.stop()
        up.stop()
    return path


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_requests_and_admin_actions_are_recorded_as_chained_metadata(audit_file):
    lines = records(audit_file)
    assert [(r["kind"], r.get("tenant"), r["status"]) for r in lines] == [
        ("request", "acme", 200), ("request", "globex", 200), ("request", "anonymous", 401),
        ("admin", None, 200), ("admin", None, 401)]
    first = lines[0]
    assert first["prev"] == GENESIS and first["model"] == "fake" and first["version"] == "v1"
    assert first["completion_tokens"] == 5 and first["prompt_tokens"] > 0 and first["latency_ms"] > 0
    assert re.fullmatch(r"[0-9a-f]{12}", first["key_id"]) and lines[1]["key_id"] != first["key_id"]  # ids, not keys
    assert lines[3]["action"] == "weights" and lines[3]["body"] == {"model": "fake", "weights": {"v2": 10}}
    assert all(b["prev"] == a["hash"] for a, b in zip(lines, lines[1:]))
    text = audit_file.read_text()
    assert "4111" not in text and "tok0" not in text and "not-the-admin-key" not in text and "sk-wrong" not in text
    assert verify(audit_file.read_bytes().splitlines()) == (5, [])


def run_verify(path: Path, capsys) -> tuple[int, str]:
    code = main(["audit", "verify", str(path)])
    return code, capsys.readouterr().out


def test_verify_finds_an_edited_a_deleted_and_a_reordered_line(audit_file, tmp_path, capsys):
    lines = audit_file.read_text().splitlines(keepends=True)
    assert run_verify(audit_file, capsys) == (0, f"{audit_file}: 5 lines, chain intact\n")

    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(lines).replace('"completion_tokens":5', '"completion_tokens":1', 1))
    code, out = run_verify(edited, capsys)
    assert code == 1 and out.startswith(f"{edited}:1: its content does not match its hash")

    deleted = tmp_path / "deleted.jsonl"
    deleted.write_text("".join(lines[:2] + lines[3:]))
    code, out = run_verify(deleted, capsys)
    assert code == 1 and out == f"{deleted}:3: its prev is not the hash of the line before: a line was " \
                                "deleted, reordered or edited before it\n"

    reordered = tmp_path / "reordered.jsonl"
    reordered.write_text("".join([lines[0], lines[2], lines[1], *lines[3:]]))
    code, out = run_verify(reordered, capsys)
    assert code == 1 and [line.split(":")[1] for line in out.splitlines()] == ["2", "3", "4"]

    first_gone = tmp_path / "first-gone.jsonl"
    first_gone.write_text("".join(lines[1:]))
    assert run_verify(first_gone, capsys)[0] == 1
    after = json.loads(lines[0])["hash"]
    assert main(["audit", "verify", str(first_gone), "--after", after]) == 0  # a log continuing a rotated one


def test_a_reopened_log_continues_its_chain_and_the_command_runs(tmp_path):
    path = tmp_path / "a.jsonl"
    for i in range(2):  # two gateway runs appending to one file
        audit = AuditLog.open(str(path))
        audit.admin("reload", 200, run=i)
        audit.close()
    done = subprocess.run(kvserve("audit", "verify", str(path)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "2 lines, chain intact" in done.stdout


def test_without_access_features_a_streamed_request_is_recorded_with_its_tokens(upstream, gateway, tmp_path):
    up = upstream(num_tokens=7)
    path = tmp_path / "audit.jsonl"
    gw = gateway(fast_config({"fake": {"pool": {"endpoints": [up.url]}}}, audit={"path": str(path)}))
    streamed = httpx.post(gw.url + "/v1/chat/completions", json=chat(stream=True))
    assert streamed.status_code == 200 and '"usage"' not in streamed.text  # the client did not ask for usage
    wait_until(lambda: path.exists() and path.read_text().strip(), 5, "no audit line")
    (line,) = records(path)
    assert (line["tenant"], line["completion_tokens"], line["stream"]) == ("anonymous", 7, True)
