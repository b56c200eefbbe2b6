"""`kvserve up`: one model's replicas, the gateway in front of them, Redis and Prometheus
when asked, on one machine, supervised and autoscaled.

The launcher's loop, every `TICK_S`:

1. the supervisor restarts what exited (with backoff) and kills what overstayed a stop;
2. membership: a replica joins the gateway's pool (admin API) once its /ready answers,
   and leaves it when its process exits or restarts; a gateway restart re-adds them all;
3. every `autoscale.interval_s` (and, at zero replicas, as soon as the gateway holds a
   request), the fleet's metrics (each replica's queue and KV usage,
   the gateway's held requests) go to `autoscaler.decide`; the decision is logged with
   its inputs and carried out: new replicas start, surplus ones leave the pool first and
   then get SIGTERM (they finish what they run);
4. state.json is rewritten for `kvserve up status` and `kvserve down`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from kvserve.control.autoscaler import Decision, ScalerMemory, decide
from kvserve.control.stack_config import StackConfig
from kvserve.control.stack_files import StackFiles
from kvserve.control.stack_fleet import StackClient
from kvserve.control.supervisor import Managed, ProcessSpec, RestartPolicy, Supervisor

log = logging.getLogger("kvserve.control.stack")
TICK_S = 0.1
WAKE_CHECK_S = 0.25  # at zero replicas, how often the gateway's held requests are read (not every interval_s)


class StackError(RuntimeError):
    """The stack could not start (a helper never came up)."""


@dataclass
class Replica:
    """A replica the launcher wants, and whether the gateway routes to it."""

    index: int
    name: str
    url: str
    in_gateway: bool = False
    ready_generation: int = 0  # the process start that was seen ready


def kvserve_argv(*args: str) -> tuple[str, ...]:
    """`kvserve ARGS` with this interpreter, so children run the same installation."""
    return (sys.executable, "-m", "kvserve.cli.main", *args)


class Stack:
    """Runs the stack described by a StackConfig until `request_stop()`."""

    def __init__(self, config: StackConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.files = StackFiles(config.run_dir)
        r = config.restart
        self.supervisor = Supervisor(RestartPolicy(r.backoff_base_s, r.backoff_max_s, r.reset_after_s), clock)
        self.policy = config.policy()
        self.memory = ScalerMemory()
        self.replicas: dict[int, Replica] = {}
        self.last_decision: Decision | None = None
        self.gateway_url = f"http://{_connect_host(config.gateway.host)}:{config.gateway.port}"
        self.client: StackClient | None = None
        self.gateway_generation = 0
        self.stop_requested = False
        self._next_scale_at = 0.0
        self._next_wake_check = 0.0
        self._state_written_at = 0.0

    def request_stop(self) -> None:
        self.stop_requested = True

    # start and stop

    def start(self) -> None:
        """Write the run directory, then start Redis, Prometheus, the gateway and the first replicas."""
        key = self.files.prepare()
        self.files.write_gateway_config(self.config)
        self.client = StackClient(self.gateway_url, key, self.config.model.name)
        if self.config.redis.enabled:
            self._start_redis()
        if self.config.prometheus.enabled:
            self._start_prometheus()
        self._start_gateway()
        for _ in range(self.config.initial_replicas()):
            self._add_replica()
        self._write_state(force=True)

    def run(self) -> None:
        """The loop, until request_stop(); then everything stops in order."""
        try:
            while not self.stop_requested:
                self.step(self.clock())
                time.sleep(TICK_S)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Gateway first (no new requests), then replicas (they finish theirs), then the helpers."""
        grace = self.config.stop_grace_s
        self._write_state(force=True, status="stopping")
        for role in ("gateway", "replica", "prometheus", "redis"):
            names = [n for n, m in self.supervisor.processes.items() if m.spec.role == role]
            self.supervisor.stop_all(names, grace)
        self.supervisor.stop_all([], grace)  # replicas stopped by a scale-down
        if self.client is not None:
            self.client.close()
        self._write_state(force=True, status="stopped")
        log.info("stack stopped")

    # the loop

    def step(self, now: float) -> None:
        self.supervisor.tick(now)
        self._sync_gateway()
        for replica in list(self.replicas.values()):
            self._sync_replica(replica, now)
        if self.config.autoscale.enabled and (now >= self._next_scale_at or self._wake_due(now)):
            self._next_scale_at = now + self.config.autoscale.interval_s
            self.autoscale(now)
        self._write_state()

    def _wake_due(self, now: float) -> bool:
        """At zero replicas a held request should not wait for the next interval."""
        if self.replicas or now < self._next_wake_check:
            return False
        self._next_wake_check = now + WAKE_CHECK_S
        return self.client is not None and (self.client.held() or 0.0) > 0

    def autoscale(self, now: float) -> Decision:
        assert self.client is not None
        ready = [r.url for r in self.replicas.values() if r.in_gateway]
        fleet = self.client.fleet(now, len(self.replicas), ready)
        decision, self.memory = decide(self.policy, self.memory, fleet)
        self.last_decision = decision
        self.files.append_decision({"time": _wall(), "current": decision.current, "desired": decision.desired,
                                    "reason": decision.reason, **decision.inputs})
        if decision.changed:
            log.info("autoscale %d -> %d (%s) %s", decision.current, decision.desired, decision.reason,
                     " ".join(f"{k}={v:g}" for k, v in decision.inputs.items()))
            self.scale_to(decision.desired)
        return decision

    def scale_to(self, count: int) -> None:
        while len(self.replicas) < count:
            self._add_replica()
        while len(self.replicas) > count:
            self._remove_replica(self._surplus())

    # replicas

    def _add_replica(self) -> Replica:
        taken = set(self.replicas) | {_index(m) for m in self.supervisor.stopping if m.spec.role == "replica"}
        index = next(i for i in range(len(taken) + 1) if i not in taken)
        r = self.config.replicas
        port = r.base_port + index
        replica = Replica(index, f"replica-{index}", f"http://{_connect_host(r.host)}:{port}")
        model = self.config.model
        argv = kvserve_argv("serve", "--model", model.path, "--served-model-name", model.name,
                            "--host", r.host, "--port", str(port), *model.args)
        self.supervisor.start(ProcessSpec(replica.name, "replica", argv, self.files.log(replica.name),
                                          _child_env(), replica.url))
        self.replicas[index] = replica
        self._update_targets()
        return replica

    def _surplus(self) -> Replica:
        """The replica to let go: one still starting if any, else the highest index."""
        return max(self.replicas.values(), key=lambda r: (not r.in_gateway, r.index))

    def _remove_replica(self, replica: Replica) -> None:
        assert self.client is not None
        if replica.in_gateway:
            self.client.admin("remove", replica.url)
        del self.replicas[replica.index]
        self.supervisor.stop(replica.name, self.config.stop_grace_s)
        self._update_targets()

    def _sync_replica(self, replica: Replica, now: float) -> None:
        assert self.client is not None
        managed = self.supervisor.processes[replica.name]
        current = managed.running() and managed.generation == replica.ready_generation
        if replica.in_gateway and not current:
            log.warning("%s went away (%s): out of the gateway's pool", replica.name, managed.state())
            replica.in_gateway = not self.client.admin("remove", replica.url)
            return
        if replica.in_gateway or not managed.running():
            return
        if self.client.ok(replica.url + "/ready"):
            if self.client.admin("add", replica.url):
                replica.in_gateway, replica.ready_generation = True, managed.generation
                log.info("%s is ready after %.1f s: in the gateway's pool", replica.name, now - managed.started_at)
        elif now - managed.started_at > self.config.replicas.start_timeout_s:
            log.warning("%s not ready after %.0f s: restarting it", replica.name, now - managed.started_at)
            self.supervisor.restart(replica.name)

    def _sync_gateway(self) -> None:
        """A restarted gateway forgot the pool: every replica joins again once it answers."""
        gateway = self.supervisor.processes.get("gateway")
        if gateway is None or gateway.generation == self.gateway_generation:
            return
        if self.client is not None and self.client.ok(self.gateway_url + "/health"):
            self.gateway_generation = gateway.generation
            for replica in self.replicas.values():
                replica.in_gateway = False

    # helpers

    def _start_gateway(self) -> None:
        argv = kvserve_argv("gateway", "--config", str(self.files.gateway_config))
        self.supervisor.start(ProcessSpec("gateway", "gateway", argv, self.files.log("gateway"), _child_env(),
                                          self.gateway_url))
        self._wait(lambda: self.client is not None and self.client.ok(self.gateway_url + "/health"), 60.0,
                   "gateway")
        self.gateway_generation = self.supervisor.processes["gateway"].generation

    def _start_redis(self) -> None:
        port = self.config.redis.port
        argv = ("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.files.run_dir))
        self.supervisor.start(ProcessSpec("redis", "redis", argv, self.files.log("redis"), None,
                                          f"redis://127.0.0.1:{port}/0"))
        self._wait(lambda: _listening("127.0.0.1", port), 20.0, "redis")

    def _start_prometheus(self) -> None:
        p = self.config.prometheus
        self.files.write_prometheus(self.config)
        argv = ("prometheus", f"--config.file={self.files.prometheus_config}",
                f"--storage.tsdb.path={self.files.run_dir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{p.port}")
        self.supervisor.start(ProcessSpec("prometheus", "prometheus", argv, self.files.log("prometheus"), None,
                                          f"http://127.0.0.1:{p.port}"))

    def _wait(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = self.clock() + timeout_s
        while not condition():
            managed = self.supervisor.processes[what]
            if not managed.running() or self.clock() > deadline:
                raise StackError(f"{what} did not come up (see {managed.spec.log_path})")
            time.sleep(0.1)

    def _update_targets(self) -> None:
        if self.config.prometheus.enabled:
            self.files.write_targets([r.url.removeprefix("http://") for r in self.replicas.values()])

    def _write_state(self, force: bool = False, status: str = "running") -> None:
        now = self.clock()
        if not force and now - self._state_written_at < 0.5:
            return
        self._state_written_at = now
        self.files.write_state(self.describe(status))

    def describe(self, status: str) -> dict[str, Any]:
        """What `kvserve up status` shows."""
        ready = {r.name for r in self.replicas.values() if r.in_gateway}
        processes = [_describe(m, ready) for m in [*self.supervisor.processes.values(), *self.supervisor.stopping]]
        decision = None
        if self.last_decision is not None:
            d = self.last_decision
            decision = {"age_s": round(self.clock() - d.at, 1), "current": d.current, "desired": d.desired,
                        "reason": d.reason, "inputs": d.inputs}
        return {"status": status, "pid": os.getpid(), "updated": _wall(), "gateway": self.gateway_url,
                "model": self.config.model.name, "autoscale": self.config.autoscale.enabled,
                "replicas": {"wanted": len(self.replicas), "ready": len(ready), "min": self.config.replicas.min,
                             "max": self.config.replicas.max},
                "last_decision": decision, "processes": processes}


def _describe(managed: Managed, ready: set[str]) -> dict[str, Any]:
    state = managed.state()
    if managed.spec.role == "replica" and state == "running":
        state = "ready" if managed.spec.name in ready else "starting"
    return {"name": managed.spec.name, "role": managed.spec.role, "pid": managed.pid, "state": state,
            "restarts": managed.restarts, "url": managed.spec.url, "log": str(managed.spec.log_path),
            "argv0": managed.spec.argv[0]}


def _index(managed: Managed) -> int:
    return int(managed.spec.name.rsplit("-", 1)[1])


def _child_env() -> dict[str, str]:
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false"}


def _connect_host(host: str) -> str:
    """Where to reach a server listening on `host` (a wildcard is reached on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "127.0.0.1", "": "127.0.0.1"}.get(host, host)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wall() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
