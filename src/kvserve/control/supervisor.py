"""Keeping local processes running: start, restart with exponential backoff, stop gracefully.

Plain bookkeeping on a clock the caller passes in; `tick(now)` does everything that is
due (restarts, kills after a grace period), so the launcher's loop stays one call. Each
process gets its own session (a Ctrl-C in the terminal reaches the launcher only, which
then stops the children in order) and appends its output to its own log file.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger("kvserve.control.supervisor")


@dataclass(frozen=True)
class RestartPolicy:
    """How long an exited process waits before its restart."""

    backoff_base_s: float = 1.0  # the first wait
    backoff_max_s: float = 60.0  # the wait doubles per failure up to this
    reset_after_s: float = 60.0  # a process that ran this long starts over at backoff_base_s

    def delay(self, failures: int) -> float:
        """Wait before restart number `failures` (1 = the first)."""
        return min(self.backoff_max_s, self.backoff_base_s * 2.0 ** max(0, failures - 1))


@dataclass(frozen=True)
class ProcessSpec:
    """What to run and where its output goes."""

    name: str  # unique within a supervisor, e.g. "replica-0"
    role: str  # "replica", "gateway", "redis", "prometheus"
    argv: tuple[str, ...]
    log_path: Path
    env: dict[str, str] | None = None
    url: str | None = None  # where it serves, for status


@dataclass
class Managed:
    """One supervised process and its restart bookkeeping."""

    spec: ProcessSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0  # exits in a row that came sooner than reset_after_s
    restarts: int = 0  # restarts in total
    restart_at: float | None = None  # set while it waits for a restart
    kill_at: float | None = None  # set while it stops: SIGKILL at this time
    last_exit: int | None = None
    generation: int = 0  # +1 per start: a readiness seen before a restart no longer counts

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def state(self) -> str:
        if self.kill_at is not None:
            return "stopping"
        if self.restart_at is not None:
            return "restarting"
        return "running" if self.running() else "exited"


class Supervisor:
    """Starts processes, restarts those that exit (unless they were told to stop), and
    stops them: SIGTERM, then SIGKILL after a grace period."""

    def __init__(self, policy: RestartPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self.processes: dict[str, Managed] = {}
        self.stopping: list[Managed] = []  # told to stop, not yet exited

    def start(self, spec: ProcessSpec) -> Managed:
        if spec.name in self.processes:
            raise ValueError(f"a process named {spec.name} is already supervised")
        managed = self.processes[spec.name] = Managed(spec)
        self._launch(managed, self.clock())
        return managed

    def stop(self, name: str, grace_s: float) -> None:
        """SIGTERM now, SIGKILL after `grace_s`; it is not restarted."""
        managed = self.processes.pop(name, None)
        if managed is None:
            return
        managed.restart_at = None
        managed.kill_at = self.clock() + grace_s
        if managed.running():
            _signal(managed, signal.SIGTERM)
        self.stopping.append(managed)

    def tick(self, now: float) -> None:
        """Reap, restart and kill what is due."""
        for managed in list(self.processes.values()):
            self._watch(managed, now)
        for managed in list(self.stopping):
            if not managed.running():
                self.stopping.remove(managed)
            elif managed.kill_at is not None and now >= managed.kill_at:
                log.warning("%s did not stop in time: killing it", managed.spec.name)
                _signal(managed, signal.SIGKILL)

    def stop_all(self, names: list[str], grace_s: float, poll_s: float = 0.1) -> None:
        """Stop `names` together and wait until they exited (killed after `grace_s`)."""
        for name in names:
            self.stop(name, grace_s)
        while self.stopping:
            self.tick(self.clock())
            time.sleep(poll_s)

    def _watch(self, managed: Managed, now: float) -> None:
        if managed.restart_at is not None:
            if now >= managed.restart_at:
                managed.restarts += 1
                self._launch(managed, now)
            return
        if managed.proc is None or managed.proc.poll() is None:
            return
        managed.last_exit = managed.proc.returncode
        lived = now - managed.started_at
        managed.failures = 1 if lived >= self.policy.reset_after_s else managed.failures + 1
        delay = self.policy.delay(managed.failures)
        managed.restart_at = now + delay
        log.warning("%s exited with %s after %.1f s; restarting in %.1f s", managed.spec.name,
                    managed.last_exit, lived, delay)

    def restart(self, name: str) -> None:
        """Kill a process that is stuck (e.g. never became ready); the backoff restarts it."""
        managed = self.processes.get(name)
        if managed is not None and managed.running():
            _signal(managed, signal.SIGKILL)

    def _launch(self, managed: Managed, now: float) -> None:
        spec = managed.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as out:
            out.write(f"--- kvserve up: starting {spec.name} (start {managed.generation + 1})\n".encode())
            out.flush()
            managed.proc = subprocess.Popen(list(spec.argv), stdout=out, stderr=subprocess.STDOUT, env=spec.env,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        managed.started_at, managed.restart_at = now, None
        managed.generation += 1
        log.info("started %s (pid %d), log %s", spec.name, managed.proc.pid, spec.log_path)


def _signal(managed: Managed, sig: int) -> None:
    try:
        assert managed.proc is not None
        managed.proc.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass  # it exited meanwhile


def alive(pid: int) -> bool:
    """Whether a process with this id runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: the signal test is all there is
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
