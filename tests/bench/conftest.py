"""Fixtures for the benchmark tests: a fake OpenAI-compatible upstream as a real process."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import free_port


def start_fake_upstream(*flags: str) -> tuple[subprocess.Popen, str]:
    """`python -m kvserve.bench.fake_upstream` on a free loopback port, once /health answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvserve.bench.fake_upstream", "--port", str(port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fake upstream exited: {proc.stderr.read().decode()}")
        try:
            httpx.get(url + "/v1/models", timeout=1.0)  # /health mirrors --fail-rate, models does not
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("fake upstream did not start in 30 s")


@pytest.fixture
def fake_upstream():
    """Factory: fake_upstream("--num-tokens", "8", ...) -> base URL; every process is stopped after the test."""
    procs = []

    def start(*flags: str) -> str:
        proc, url = start_fake_upstream(*flags)
        procs.append(proc)
        return url

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def steady_upstream():
    """One shared fake upstream: 8 tokens per answer at 200 tokens/s, 20 ms to the first token."""
    proc, url = start_fake_upstream("--num-tokens", "8", "--tokens-per-second", "200", "--ttft", "0.02")
    yield url
    proc.terminate()
    proc.wait(timeout=10)
