"""The supervisor on real short-lived processes: restarts with doubling backoff, graceful stops, kills."""

from __future__ import annotations

import sys
import time

from kvserve.control.supervisor import ProcessSpec, RestartPolicy, Supervisor, alive
from tests.helpers import wait_until


def spec(tmp_path, name: str, code: str) -> ProcessSpec:
    return ProcessSpec(name, "test", (sys.executable, "-c", code), tmp_path / f"{name}.log")


def run_for(supervisor: Supervisor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        supervisor.tick(time.monotonic())
        time.sleep(0.01)


def test_a_crashing_process_restarts_with_doubling_backoff_and_logs_each_start(tmp_path):
    supervisor = Supervisor(RestartPolicy(backoff_base_s=0.2, backoff_max_s=0.8, reset_after_s=30))
    managed = supervisor.start(spec(tmp_path, "crash", "import sys; print('up', flush=True); sys.exit(3)"))
    starts = []
    deadline = time.monotonic() + 10
    while len(starts) < 5 and time.monotonic() < deadline:
        if not starts or managed.generation > len(starts):
            starts.append(time.monotonic())
        supervisor.tick(time.monotonic())
        time.sleep(0.005)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert managed.last_exit == 3 and managed.restarts >= 4
    # waits of 0.2, 0.4, 0.8, 0.8 (capped), each plus the interpreter's start-up
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and gaps[2] >= 0.8 and gaps[3] >= 0.8
    assert gaps[1] > gaps[0] + 0.1 and gaps[3] < gaps[2] + 0.5
    log = (tmp_path / "crash.log").read_text()
    assert log.count("up\n") >= 4 and "starting crash (start 2)" in log


def test_stop_sends_sigterm_and_the_process_is_not_restarted(tmp_path):
    supervisor = Supervisor(RestartPolicy(backoff_base_s=0.05))
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); time.sleep(60)"
    managed = supervisor.start(spec(tmp_path, "polite", code))
    run_for(supervisor, 0.5)  # let it install its handler
    supervisor.stop_all(["polite"], grace_s=10)
    assert managed.proc.returncode == 0  # its own handler ran: a SIGTERM, not a kill
    run_for(supervisor, 0.3)
    assert "polite" not in supervisor.processes and not alive(managed.pid)


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    supervisor = Supervisor(RestartPolicy())
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    managed = supervisor.start(spec(tmp_path, "stubborn", code))
    wait_until(lambda: "ready" in (tmp_path / "stubborn.log").read_text(), 10, "the child never started")
    started = time.monotonic()
    supervisor.stop_all(["stubborn"], grace_s=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert managed.proc.returncode == -9


def test_a_long_run_resets_the_backoff(tmp_path):
    policy = RestartPolicy(backoff_base_s=0.1, backoff_max_s=10, reset_after_s=0.3)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 9)] == [0.1, 0.2, 0.4, 0.8, 10]
    supervisor = Supervisor(policy)
    managed = supervisor.start(spec(tmp_path, "slow", "import time; time.sleep(0.5)"))
    wait_until(lambda: (supervisor.tick(time.monotonic()), managed.restarts >= 2)[1], 10, "it never restarted twice")
    assert managed.failures == 1  # each run outlived reset_after_s: the next wait is the base again
