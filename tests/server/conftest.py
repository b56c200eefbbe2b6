"""A real `kvserve serve` process on a free loopback port, started the way a user starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import build_model, free_port

START_TIMEOUT_S = 180.0


class ServerProcess:
    """`python -m kvserve.cli.main serve ...` with its output captured in a file."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "kvserve.cli.main", "serve", "--port", str(self.port), *args]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kvserve serve exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"kvserve serve not ready after {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def metrics(self) -> dict[str, float]:
        """Unlabelled view of /metrics: 'name' -> value, labels dropped (one model)."""
        text = httpx.get(self.url + "/metrics", timeout=10.0).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name_labels, value = line.rsplit(" ", 1)
                values[name_labels.split("{", 1)[0]] = values.get(name_labels.split("{", 1)[0], 0.0) + float(value)
        return values

    def wait_idle(self, timeout: float = 30.0) -> dict[str, float]:
        """Poll /metrics until nothing runs, waits or holds KV blocks; returns the last scrape."""
        deadline = time.monotonic() + timeout
        while True:
            values = self.metrics()
            idle = (values["vllm:num_requests_running"] == 0 and values["vllm:num_requests_waiting"] == 0
                    and values["vllm:kv_cache_usage_perc"] == 0)
            if idle or time.monotonic() > deadline:
                return values
            time.sleep(0.05)


def start_server(tmp_path_factory: pytest.TempPathFactory, model: Path, *args: str) -> ServerProcess:
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    server = ServerProcess(["--model", str(model), *args], log_path)
    try:
        return server.wait_ready()
    except BaseException:
        server.stop()
        raise


# The shared server answers to the name the embedded default model is served under, so
# that the quick-start snippets of docs/server.md run against it unchanged.
MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="session")
def server(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory):
    """The shared server (tiny random Llama) for tests that do not care what else runs on it."""
    proc = start_server(tmp_path_factory, tiny_llama, "--served-model-name", MODEL_NAME, "--max-model-len", "256")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def slower_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Llama big enough that a long generation takes seconds on the CPU, so that a
    test can act (disconnect, scrape metrics) while it is still running."""
    return build_model("llama", tmp_path_factory.mktemp("slower-llama"), hidden_size=256, intermediate_size=1024,
                       num_hidden_layers=4, max_position_embeddings=2048)
