"""Fixtures for the benchmark tests: a fake OpenAI-compatible upstream as a real process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, free_port


def start_fake_upstream(log_path: Path, *flags: str) -> ServerProcess:
    """`python -m kvserve.bench.fake_upstream` on a free loopback port, once it answers
    (on /v1/models: /health mirrors --fail-rate, models does not)."""
    port = free_port()
    command = [sys.executable, "-m", "kvserve.bench.fake_upstream", "--port", str(port), *flags]
    return ServerProcess(command, port, log_path, stop_timeout=10).start("/v1/models", ready=lambda _: True)


@pytest.fixture
def fake_upstream(tmp_path: Path):
    """Factory: fake_upstream("--num-tokens", "8", ...) -> base URL; every process is stopped after the test."""
    procs: list[ServerProcess] = []

    def start(*flags: str) -> str:
        procs.append(start_fake_upstream(tmp_path / f"fake-upstream-{len(procs)}.log", *flags))
        return procs[-1].url

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture(scope="module")
def steady_upstream(tmp_path_factory: pytest.TempPathFactory):
    """One shared fake upstream: 8 tokens per answer at 200 tokens/s, 20 ms to the first token."""
    log = tmp_path_factory.mktemp("steady-upstream") / "fake-upstream.log"
    proc = start_fake_upstream(log, "--num-tokens", "8", "--tokens-per-second", "200", "--ttft", "0.02")
    yield proc.url
    proc.stop()
