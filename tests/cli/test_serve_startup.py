"""`kvserve serve` before and at start-up: what a user sees in the first seconds."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx

from kvserve import __version__
from tests.helpers import ServeProcess, free_port


def kvserve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvserve.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_mistyped_flag_shows_the_subcommand_usage_and_the_closest_flag():
    result = kvserve("serve", "--polcy", "priority")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: kvserve serve")
    assert "unrecognized arguments: --polcy priority (did you mean --policy?)" in result.stderr


def test_a_busy_port_fails_at_once_naming_the_port(tiny_llama):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        start = time.monotonic()
        result = kvserve("serve", "--model", str(tiny_llama), "--port", str(port))
        elapsed = time.monotonic() - start
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr and "--port" in result.stderr
    assert "loading" not in result.stderr  # failed before the model was touched
    assert elapsed < 30  # the interpreter and imports only, on a busy 2-core box


def test_cuda_without_cuda_says_so_at_once(tiny_llama):
    import torch

    if torch.cuda.is_available():
        return  # this machine has the device: nothing to refuse
    result = kvserve("serve", "--model", str(tiny_llama), "--device", "cuda", "--port", str(free_port()))
    assert result.returncode == 1
    assert "no CUDA device is available" in result.stderr
    assert "pin_memory" not in result.stderr and "Traceback" not in result.stderr


def test_start_up_logs_its_steps_then_one_banner(tiny_llama, tmp_path):
    server = ServeProcess(["--model", str(tiny_llama), "--served-model-name", "tiny"], tmp_path / "log").launch()
    try:
        while "loading" not in server.logs() and server.proc.poll() is None:
            time.sleep(0.02)
        try:  # the port is bound by now (a busy one would have failed), but not listening until loaded
            httpx.get(server.url + "/health", timeout=5.0)
            answered_early = "KV pool" not in server.logs()
        except httpx.ConnectError:
            answered_early = False
        server.wait_ready()
        deadline = time.monotonic() + 10
        while "KV pool" not in server.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        logs = server.logs()
    finally:
        assert server.stop() == 0
    assert not answered_early
    assert f"loading {tiny_llama}" in logs
    assert "loading weights" in logs  # the progress bar of the engine process
    assert "sampling defaults" in logs
    banner = logs[logs.index(f"kvserve {__version__} ready"):]
    assert "model    tiny" in banner
    assert f"URL      {server.url}/v1" in banner
    assert "device   cpu" in banner and "KV pool" in banner
    assert logs.index("loading weights") < logs.index(f"kvserve {__version__} ready")
