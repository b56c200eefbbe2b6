"""Start-up, shutdown, API key and request logs of a real `kvserve serve` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers import ServeProcess
from tests.server.conftest import start_server


def _children(pid: int) -> list[int]:
    """Child processes of `pid`, whichever of its threads started them."""
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_lets_in_flight_requests_finish_then_exits_0(slower_llama, tmp_path_factory):
    server = start_server(tmp_path_factory, slower_llama, "--shutdown-timeout", "60")
    try:
        _check_graceful_sigterm(server)
    finally:
        server.stop()


def test_sigterm_to_the_whole_process_group_still_drains_then_exits_0(slower_llama, tmp_path):
    """systemd (KillMode=control-group) and shell entrypoints signal every process at once:
    the engine core must leave its lifetime to the server, which drains first."""
    server = ServeProcess(["--model", str(slower_llama), "--shutdown-timeout", "60"], tmp_path / "server.log",
                          new_session=True).start()
    try:
        _check_graceful_sigterm(server, group=True)
    finally:
        server.stop()


def _check_graceful_sigterm(server: ServeProcess, group: bool = False) -> None:
    core_pids = _children(server.proc.pid)
    assert core_pids, "the engine core runs in a child process"
    body = {"prompt": "Hello", "max_tokens": 30, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    chunks: list[str] = []

    def stream() -> None:
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=120) as response:
            for line in response.iter_lines():
                chunks.append(line)
                if len(chunks) == 2:  # the first event is out: the request is in flight
                    if group:
                        os.killpg(server.proc.pid, signal.SIGTERM)
                    else:
                        server.proc.send_signal(signal.SIGTERM)

    reader = threading.Thread(target=stream)
    reader.start()
    reader.join(120)
    assert server.proc.wait(60) == 0
    events = [c.removeprefix("data: ") for c in chunks if c.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 30  # every token arrived
    assert json.loads(events[-3])["choices"][0]["finish_reason"] == "length"
    deadline = time.monotonic() + 10  # the core (and multiprocessing's resource tracker) follow the server out
    while any(_alive(pid) for pid in core_pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in core_pids)
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/health", timeout=2)


def test_engine_start_failure_exits_1_with_the_reason(tiny_llama, tmp_path):
    server = ServeProcess(["--model", str(tiny_llama), "--max-model-len", "100000"], tmp_path / "log").launch()
    try:
        assert server.proc.wait(180) == 1
    finally:
        server.stop()
    assert "max_model_len=100000" in server.logs()
    assert "Traceback" not in server.logs()


def test_bad_settings_exit_2_with_the_setting_named(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("block_size: 7\n")
    result = subprocess.run([sys.executable, "-m", "kvserve.cli.main", "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "block_size" in result.stderr
    config.write_text("max_num_seqs: 4\nportt: 1\n")
    result = subprocess.run([sys.executable, "-m", "kvserve.cli.main", "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "portt" in result.stderr


@pytest.fixture(scope="module")
def keyed_server(tiny_llama, tmp_path_factory):
    proc = start_server(tmp_path_factory, tiny_llama, "--api-key", "s3cret", "--log-requests",
                        "--served-model-name", "tiny")
    yield proc
    proc.stop()


def test_api_key_is_required_on_the_api_only(keyed_server):
    url = keyed_server.url
    body = {"model": "tiny", "prompt": "Hi", "max_tokens": 2}
    assert httpx.post(url + "/v1/completions", json=body).status_code == 401
    wrong = httpx.post(url + "/v1/completions", json=body, headers={"Authorization": "Bearer s3cre"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert httpx.post(url + "/tokenize", json={"prompt": "Hi"}).status_code == 401
    client = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
    assert client.completions.create(model="tiny", prompt="Hi", max_tokens=2).usage.completion_tokens == 2
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()
    assert httpx.get(url + "/health").status_code == 200
    assert httpx.get(url + "/metrics").status_code == 200


def test_the_bearer_scheme_is_case_insensitive_and_the_key_is_not(keyed_server):
    url, body = keyed_server.url, {"model": "tiny", "prompt": "Hi", "max_tokens": 1}
    for scheme in ("bearer", "BEARER", "Bearer", "bEaReR"):
        reply = httpx.post(url + "/v1/completions", json=body, headers={"Authorization": f"{scheme} s3cret"})
        assert reply.status_code == 200, (scheme, reply.text)
    for given in ("bearer S3CRET", "Basic s3cret", "bearers3cret", "s3cret", "bearer s3cret2", "bearer"):
        reply = httpx.post(url + "/v1/completions", json=body, headers={"Authorization": given})
        assert reply.status_code == 401, given


def _request_lines(server: ServeProcess) -> list[dict]:
    lines = [line for line in server.logs().splitlines() if line.startswith('{"event": "request"')]
    return [json.loads(line) for line in lines]


def test_one_log_line_per_request_with_text_only_when_asked(keyed_server, server):
    headers = {"Authorization": "Bearer s3cret"}
    reply = httpx.post(keyed_server.url + "/v1/completions", headers=headers,
                       json={"model": "tiny", "prompt": "Secret prompt", "max_tokens": 3})
    request_id = reply.json()["id"]
    time.sleep(0.5)
    mine = [r for r in _request_lines(keyed_server) if r.get("request_id") == request_id]
    assert len(mine) == 1
    line = mine[0]
    assert line["status"] == 200 and line["prompt_tokens"] >= 1 and line["completion_tokens"] == 3
    assert line["prompt"] == "Secret prompt" and len(line["completion"]) == 1
    assert line["ttft_s"] > 0 and line["e2e_s"] >= line["ttft_s"]
    # without --log-requests, no text at all
    quiet = httpx.post(server.url + "/v1/completions", json={"prompt": "Secret prompt", "max_tokens": 3})
    time.sleep(0.5)
    line = next(r for r in _request_lines(server) if r.get("request_id") == quiet.json()["id"])
    assert "prompt" not in line and "completion" not in line
    assert "Secret prompt" not in server.logs()
    failed = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "n": 0})
    time.sleep(0.5)
    assert any(r["status"] == 400 and r.get("error") for r in _request_lines(server)), failed.text


def test_sigterm_past_the_grace_period_still_answers_every_request(slower_llama, tmp_path_factory):
    """--shutdown-timeout 3 with requests that need far longer: a whole answer gets an
    OpenAI-shaped 503, a stream an error event and then data: [DONE]; the process exits 0."""
    server = start_server(tmp_path_factory, slower_llama, "--shutdown-timeout", "3")
    body = {"prompt": "Hello", "max_tokens": 2000, "ignore_eos": True}
    results: dict[str, object] = {}
    started = threading.Event()

    def whole() -> None:
        results["whole"] = httpx.post(server.url + "/v1/completions", json=body, timeout=120)

    def stream() -> None:
        lines = results.setdefault("stream", [])
        with httpx.stream("POST", server.url + "/v1/completions", json={**body, "stream": True}, timeout=120) as r:
            for line in r.iter_lines():
                lines.append(line)  # type: ignore[attr-defined]
                started.set()

    try:
        threads = [threading.Thread(target=whole), threading.Thread(target=stream)]
        for thread in threads:
            thread.start()
        assert started.wait(60)
        time.sleep(0.5)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        answered = time.monotonic() - signalled
        assert server.proc.wait(60) == 0
    finally:
        server.stop()
    reply = results["whole"]
    assert isinstance(reply, httpx.Response) and reply.status_code == 503, reply
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["error"]["code"] == "server_shutting_down"
    events = [line.removeprefix("data: ") for line in results["stream"] if line.startswith("data: ")]  # type: ignore[union-attr]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "server_shutting_down"
    assert 3 <= answered < 8, answered
