"""`kvserve up` / `status` / `down` with real processes: tiny-model replicas, the gateway, Redis.

One stack (scale to zero, at most two replicas, short windows) serves the module; each
test first waits for the state it needs (e.g. back at zero replicas), so their order
does not matter.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from kvserve.control.supervisor import alive
from tests.helpers import ServerProcess, answers, free_port, kvserve, wait_until

pytestmark = pytest.mark.slow


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(kvserve(*args), capture_output=True, text=True, timeout=timeout)


def two_free_ports() -> int:
    """A port p with p and p + 1 free (replica i listens on base_port + i)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def write_stack(tmp: Path, model: Path, **extra) -> tuple[Path, int]:
    port = free_port()
    stack = {
        "run_dir": "run",
        "model": {"path": str(model), "name": "tiny",
                  "args": ["--max-model-len", "256", "--kv-cache-gib", "0.02", "--max-num-seqs", "1"]},
        "replicas": {"min": 0, "max": 2, "base_port": two_free_ports()},
        "autoscale": {"enabled": True, "interval_s": 0.3, "target_waiting": 1, "scale_up_window_s": 0,
                      "scale_down_window_s": 6, "cooldown_s": 2},
        "gateway": {"port": port, "hold_timeout_s": 120,
                    "settings": {"health": {"interval_s": 0.2}, "scrape": {"interval_s": 0.1}}},
        "restart": {"backoff_base_s": 0.2},
        "stop_grace_s": 10,
        **extra,
    }
    path = tmp / "stack.yaml"
    path.write_text(yaml.safe_dump(stack))
    return path, port


class UpProcess(ServerProcess):
    def __init__(self, stack: Path, port: int) -> None:
        super().__init__(kvserve("up", "-f", str(stack)), port, stack.parent / "up.out", stop_timeout=60)
        self.stack = stack

    def state(self) -> dict:
        """The launcher's state.json; before its first write (the gateway may answer first), no processes."""
        path = self.stack.parent / "run" / "state.json"
        if not path.exists():
            return {"replicas": {"wanted": 0, "ready": 0}, "processes": []}
        return json.loads(path.read_text())  # written atomically (rename)

    def replicas(self) -> tuple[int, int]:
        """(wanted, ready)"""
        r = self.state()["replicas"]
        return r["wanted"], r["ready"]

    def decisions(self) -> list[dict]:
        text = (self.stack.parent / "run" / "logs" / "autoscaler.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]

    def down(self) -> subprocess.CompletedProcess:
        done = run("down", "-f", str(self.stack))
        if self.proc is not None:
            self.proc.wait(30)
        return done


@pytest.fixture(scope="module")
def stack(tiny_llama, tmp_path_factory):
    path, port = write_stack(tmp_path_factory.mktemp("up"), tiny_llama)
    up = UpProcess(path, port).start("/health", timeout=60, ready=answers)
    yield up
    up.down()
    up.stop()


def chat(url: str, max_tokens: int = 4, **extra) -> httpx.Response:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens, **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=180)


def at_zero(stack: UpProcess) -> None:
    wait_until(lambda: stack.replicas() == (0, 0) and
               not any(p["role"] == "replica" for p in stack.state()["processes"]), 90, "never back at zero", 0.2)


def test_status_and_down_of_a_stack_that_is_not_running(tmp_path, tiny_llama):
    path, _ = write_stack(tmp_path, tiny_llama)
    status = run("up", "status", "-f", str(path))
    assert status.returncode == 3 and status.stdout.strip() == "stack: not running"
    assert run("down", "-f", str(path)).stdout.strip() == "kvserve down: not running"
    bad = run("up", "-f", str(tmp_path / "missing.yaml"))
    assert bad.returncode == 2 and "cannot read" in bad.stderr


def test_a_first_request_at_zero_replicas_is_answered_after_a_wake(stack):
    at_zero(stack)
    started = time.monotonic()
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", timeout=180, max_retries=0)
    answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    elapsed = time.monotonic() - started
    assert answer.choices[0].finish_reason in ("length", "stop") and answer.model == "tiny"
    starts = [float(s) for s in re.findall(r"replica-\d is ready after ([\d.]+) s", (stack.stack.parent / "up.out").read_text())]
    assert elapsed <= starts[-1] + 2.0, (elapsed, starts)  # the target: model start time + 2 s
    wake = [d for d in stack.decisions() if d["reason"].startswith("wake")][-1]
    assert wake["held"] >= 1 and wake["current"] == 0 and wake["desired"] == 1

    # the gateway routes to the replica once its /ready answers; the launcher's own poll of
    # /ready marks it ready in state.json within its interval
    wait_until(lambda: stack.replicas()[1] == 1, 10, "the launcher never marked the replica ready", 0.1)
    status = run("up", "status", "-f", str(stack.stack))
    assert status.returncode == 0 and "stack: running" in status.stdout
    assert re.search(r"replica-0 +replica +\d+ +ready", status.stdout), status.stdout


def test_a_load_ramp_scales_out_and_idleness_scales_back_to_min(stack):
    stop = threading.Event()
    statuses: list[int] = []

    def load() -> None:
        while not stop.is_set():
            statuses.append(chat(stack.url, max_tokens=48, ignore_eos=True).status_code)

    load_started = datetime.now().astimezone()
    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: stack.replicas() == (2, 2), 180, "the ramp did not bring a second ready replica", 0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(200)
    assert statuses and set(statuses) == {200}
    ramp = [d for d in stack.decisions() if datetime.fromisoformat(d["time"]) >= load_started.replace(microsecond=0)]
    queued = next(d for d in ramp if d["waiting"] + d["held"] > 1)  # first read of a queue above target
    up = next(d for d in ramp if d["reason"].startswith("up") and d["desired"] == 2)
    assert up["waiting"] + up["held"] > 1
    assert (datetime.fromisoformat(up["time"]) - datetime.fromisoformat(queued["time"])).total_seconds() < 30

    at_zero(stack)  # min is 0: idleness takes the fleet all the way down
    down = [d for d in stack.decisions() if d["reason"].startswith("down")]
    assert [d["desired"] for d in down[-2:]] == [1, 0] and all(d["running"] == 0 for d in down[-2:])


def scraped_jobs(prometheus_url: str) -> set[str]:
    """Jobs with a target Prometheus scraped successfully."""
    try:
        targets = httpx.get(prometheus_url + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    except (httpx.HTTPError, ValueError, KeyError):
        return set()
    return {t["labels"]["job"] for t in targets if t["health"] == "up"}


def test_a_fixed_stack_with_helpers_survives_a_gateway_crash_and_stops_on_down(tmp_path, tiny_llama):
    prometheus_port = free_port()
    path, port = write_stack(tmp_path, tiny_llama, redis={"enabled": True, "port": free_port()},
                             prometheus={"enabled": True, "port": prometheus_port, "scrape_interval_s": 1},
                             autoscale={"enabled": False}, replicas={"min": 1, "max": 1, "base_port": free_port()})
    up = UpProcess(path, port).start("/health", timeout=60, ready=answers)
    try:
        wait_until(lambda: up.replicas() == (1, 1), 180, "the replica never got ready", 0.2)
        assert chat(up.url).status_code == 200
        wait_until(lambda: scraped_jobs(f"http://127.0.0.1:{prometheus_port}") == {"kvserve-gateway", "kvserve-replica"},
                   60, "Prometheus does not scrape the gateway and the replica", 0.5)
        gateway = next(p for p in up.state()["processes"] if p["role"] == "gateway")
        subprocess.run(["kill", "-9", str(gateway["pid"])], check=True)
        wait_until(lambda: any(p["role"] == "gateway" and p["restarts"] == 1 and p["state"] == "running"
                               for p in up.state()["processes"]), 30, "the gateway was not restarted", 0.1)
        key = (tmp_path / "run" / "admin.key").read_text().strip()
        replica_url = next(p["url"] for p in up.state()["processes"] if p["role"] == "replica")

        def pool() -> list[str]:
            try:
                state = httpx.get(up.url + "/admin/state", headers={"x-admin-key": key}, timeout=5).json()
            except httpx.HTTPError:
                return []
            return state["models"]["tiny"]["versions"]["default"]["pool"]["endpoints"]

        wait_until(lambda: pool() == [replica_url], 30, "the restarted gateway did not get the replica back", 0.1)
        assert chat(up.url).status_code == 200

        status = run("up", "status", "-f", str(path), "--json")
        state = json.loads(status.stdout)
        assert status.returncode == 0 and {p["role"] for p in state["processes"]} == {"gateway", "redis", "prometheus", "replica"}
        pids = [p["pid"] for p in state["processes"]] + [state["pid"]]
        again = run("up", "-f", str(path))
        assert again.returncode == 1 and "already runs" in again.stderr
        done = up.down()
        assert done.returncode == 0 and "stopped" in done.stdout
        assert up.proc.returncode == 0
        assert not any(alive(pid) for pid in pids)
        assert run("up", "status", "-f", str(path)).returncode == 3
    finally:
        up.stop()
