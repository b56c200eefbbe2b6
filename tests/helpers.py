"""What the tests share to run real servers: loopback ports, waiting, subprocess servers, /metrics.

Every test that starts a server in a subprocess does it with `ServerProcess` (or
`ServeProcess` for `kvserve serve`), and every test that reads a Prometheus page parses
it with `Metrics`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

SERVE_START_TIMEOUT_S = 180.0


def free_port() -> int:
    """A loopback port nothing listens on right now (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, message: str, step: float = 0.01) -> None:
    """Poll `condition` every `step` seconds; AssertionError(message) after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(step)


def kvserve(*args: str) -> list[str]:
    """The command line of `kvserve ARGS` with this interpreter (so that it imports this tree)."""
    return [sys.executable, "-m", "kvserve.cli.main", *args]


def is_200(response: httpx.Response) -> bool:
    return response.status_code == 200


def answers(response: httpx.Response) -> bool:
    """Any answer short of a server error: up, whatever it thinks of the request."""
    return response.status_code < 500


class Metrics:
    """A parsed Prometheus text page. `value(name, **labels)` sums the samples of `name`
    whose labels include `labels` (0.0 when there are none); `metrics[name]` sums every
    sample of `name` and raises KeyError when the page has none, as a dict of series would."""

    def __init__(self, text: str) -> None:
        self.samples = [(s.name, s.labels, s.value)
                        for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        return sum(v for n, have, v in self.samples if n == name and labels.items() <= have.items())

    def __getitem__(self, name: str) -> float:
        values = [v for n, _, v in self.samples if n == name]
        if not values:
            raise KeyError(name)
        return sum(values)

    def get(self, name: str, default: float = 0.0) -> float:
        try:
            return self[name]
        except KeyError:
            return default


def scrape(url: str, path: str = "/metrics") -> Metrics:
    return Metrics(httpx.get(url + path, timeout=10.0).text)


class ServerProcess:
    """A server command in a subprocess, listening on a loopback port, its output in a log
    file. `start()` launches it and waits until `path` answers; `stop()` sends SIGTERM and
    kills it if it has not exited `stop_timeout` seconds later."""

    def __init__(self, command: list[str], port: int, log_path: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, stop_timeout: float = 30.0, new_session: bool = False) -> None:
        self.command, self.port, self.log_path = command, port, log_path
        self.env, self.cwd, self.stop_timeout = env, cwd, stop_timeout
        self.new_session = new_session  # its own process group: signal it and its children at once (os.killpg)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> ServerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                         start_new_session=self.new_session)
        return self

    def wait_ready(self, path: str = "/ready", timeout: float = 30.0,
                   ready: Callable[[httpx.Response], bool] = is_200, step: float = 0.1) -> ServerProcess:
        """Until GET `path` gives an answer `ready` accepts; RuntimeError if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"{self.command[:4]} exited with {code}:\n{self.logs()[-3000:]}")
            try:
                if ready(httpx.get(self.url + path, timeout=2.0)):
                    return self
            except httpx.TransportError:
                pass
            time.sleep(step)
        raise TimeoutError(f"{self.command[:4]} not ready after {timeout} s:\n{self.logs()[-3000:]}")

    def start(self, path: str = "/ready", timeout: float = 30.0,
              ready: Callable[[httpx.Response], bool] = is_200) -> ServerProcess:
        """Launch, then wait until ready; a process that does not get ready is stopped."""
        self.launch()
        try:
            return self.wait_ready(path, timeout, ready)
        except BaseException:
            self.stop()
            raise

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> Metrics:
        return scrape(self.url)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, then a kill after `timeout` (default `stop_timeout`); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


class ServeProcess(ServerProcess):
    """`kvserve serve --port <free port> ARGS`, started the way a user starts it."""

    def __init__(self, args: list[str], log_path: Path, port: int | None = None, stop_timeout: float = 60.0,
                 new_session: bool = False) -> None:
        port = port or free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        super().__init__(kvserve("serve", "--port", str(port), *args), port, log_path, env=env,
                         stop_timeout=stop_timeout, new_session=new_session)

    def wait_ready(self, path: str = "/ready", timeout: float = SERVE_START_TIMEOUT_S,
                   ready: Callable[[httpx.Response], bool] = is_200, step: float = 0.2) -> ServeProcess:
        super().wait_ready(path, timeout, ready, step)
        return self

    def start(self, path: str = "/ready", timeout: float = SERVE_START_TIMEOUT_S,
              ready: Callable[[httpx.Response], bool] = is_200) -> ServeProcess:
        super().start(path, timeout, ready)
        return self

    def wait_idle(self, timeout: float = 30.0) -> Metrics:
        """Poll /metrics until nothing runs, waits or holds KV blocks; returns the last scrape."""
        deadline = time.monotonic() + timeout
        while True:
            values = self.metrics()
            idle = (values["vllm:num_requests_running"] == 0 and values["vllm:num_requests_waiting"] == 0
                    and values["vllm:kv_cache_usage_perc"] == 0)
            if idle or time.monotonic() > deadline:
                return values
            time.sleep(0.05)
