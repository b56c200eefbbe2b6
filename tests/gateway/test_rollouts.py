"""Rollouts judged by a real gateway process from its own traffic: fake upstreams for
versions A and B on loopback, load from client threads, short bake times, small sample
minimums. A bad B (30% 500s, or 3x the TTFT) is rolled back by itself; a good one is
promoted through every step and its registry tag moved; a gateway restarted on the same
Redis resumes the rollout at its step with its weights."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from kvserve.control.ref import ModelRef
from kvserve.control.registry import Registry
from kvserve.control.registry_config import RegistryConfig
from kvserve.control.storage import open_storage
from tests.helpers import wait_until

from .conftest import ADMIN_KEY, chat, fast_config

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
# latency within half a second of A's is no breach: a loaded 2-core box must not fail a good
# B on noise; the TTFT test tightens it
THRESHOLDS = {"min_requests": 40, "min_latency_samples": 20, "latency_slack_s": 0.5}


class Load:
    """Chat requests through the gateway from a few threads, plain and streaming in turn,
    until stopped; each answer as (wall time it was sent, version that answered, status)."""

    def __init__(self, url: str, threads: int = 4, **extra: Any) -> None:
        self.url = url
        self.extra = extra  # more fields of each request's body
        self.answers: list[tuple[float, str, int]] = []
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(30)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            n = 0
            while not self.stopped.is_set():
                n += 1
                sent = time.time()
                body = chat("chat", stream=n % 2 == 0, **self.extra)
                with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    r.read()
                self.answers.append((sent, r.headers.get("x-model-version", "none"), r.status_code))

    def since(self, start: float) -> list[tuple[float, str, int]]:
        return [a for a in list(self.answers) if a[0] >= start]

    def enough_of_each(self, start: float, count: int) -> float | None:
        """When the requests sent after `start` included `count` for each version (the first
        moment a window could be judged, give or take their answer time), or None."""
        seen: Counter[str] = Counter()
        for at, version, _ in self.since(start):
            seen[version] += 1
            if seen["v1"] >= count and seen["v2"] >= count:
                return at
        return None


def two_versions(a: str, b: str, **sections: Any) -> dict[str, Any]:
    models = {"chat": {"sticky": False, "versions": {"v1": {"weight": 100, "pool": {"endpoints": [a]}},
                                                     "v2": {"weight": 0, "pool": {"endpoints": [b]}}}}}
    # breakers stay out of the way: the rollout, not the breaker, is under test
    return fast_config(models, breaker={"consecutive_failures": 1000, "min_requests": 100000}, **sections)


def rollout(url: str, **body: Any) -> dict[str, Any]:
    answer = httpx.get(f"{url}/admin/rollouts/chat", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def start(url: str, **body: Any) -> dict[str, Any]:
    answer = httpx.post(f"{url}/admin/rollouts", headers=AUTH, timeout=10,
                        json={"model": "chat", "from": "v1", "to": "v2", "thresholds": THRESHOLDS, **body})
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_phase(url: str, phase: str, timeout: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (current := rollout(url))["phase"] != phase:
        assert time.monotonic() < deadline, f"rollout not {phase} after {timeout} s: {current}"
        time.sleep(0.1)
    return current


def weights(url: str) -> dict[str, float]:
    versions = httpx.get(f"{url}/admin/state", headers=AUTH, timeout=10).json()["models"]["chat"]["versions"]
    return {name: v["weight"] for name, v in versions.items()}


def rolled_back_alone(upstream, processes, tmp_path: Path, a_ttft: float, b: dict[str, Any], judged_at: int,
                      **thresholds: float) -> tuple[dict[str, Any], Load, Any]:
    """Run a 50% rollout from an A with `a_ttft` to a B configured as `b` until the gateway
    rolls it back; the breach shows once both versions have `judged_at` answers."""
    a_server = upstream(name="a", ttft=a_ttft)
    b_server = upstream(name="b", **{"ttft": a_ttft, **b})
    gw = processes.gateway(tmp_path / "gateway.yaml", two_versions(a_server.url, b_server.url))
    begun = start(gw.url, steps=[50], bake_s=120, thresholds={**THRESHOLDS, **thresholds})["started_at"]
    with Load(gw.url) as load:
        final = wait_phase(gw.url, "rolled_back")
        rolled_back_at = final["events"][-1]["time"]
        wait_until(lambda: len(load.since(rolled_back_at + 0.1)) >= 20, 30, "no traffic after the roll back")
    window_closed = load.enough_of_each(begun, judged_at)
    assert window_closed is not None
    assert rolled_back_at - window_closed < 10.0, (rolled_back_at, window_closed)
    after = load.since(rolled_back_at + 0.1)
    assert {version for _, version, _ in after} == {"v1"} and {status for _, _, status in after} == {200}
    assert weights(gw.url) == {"v1": 100.0, "v2": 0.0}
    return final, load, gw


def test_a_version_answering_30_percent_500s_is_rolled_back(upstream, processes, tmp_path):
    # latency is not judged here (too few samples, ever): the error rate alone rolls back
    final, load, gw = rolled_back_alone(upstream, processes, tmp_path, 0.05, {"fail_rate": 0.3, "status_code": 500},
                                        THRESHOLDS["min_requests"], min_latency_samples=100_000)
    assert final["state"]["reason"].startswith("error rate ") and final["events"][-1]["breaches"] == ["error_rate"]
    assert any(status == 500 for _, version, status in load.answers if version == "v2")
    metrics = gw.metrics()
    assert metrics.value("kvserve:gateway_rollout_rollbacks_total", model="chat", reason="error_rate") == 1
    assert metrics.value("kvserve:gateway_rollout_weight", model="chat", version="v2") == 0
    assert metrics.value("kvserve:gateway_rollout_state", model="chat", state="rolled_back") == 1
    gw.stop()
    lines = [json.loads(line.split(" ", 4)[4]) for line in gw.logs().splitlines() if "rollout_rolled_back" in line]
    assert len(lines) == 1 and lines[0]["model"] == "chat" and lines[0]["reason"] == final["state"]["reason"]


def test_a_version_with_3x_the_ttft_is_rolled_back(upstream, processes, tmp_path):
    # first tokens slow enough that a busy box's scheduling noise does not hide 3x
    final, _, gw = rolled_back_alone(upstream, processes, tmp_path, 0.2, {"ttft": 0.6},
                                     THRESHOLDS["min_latency_samples"], latency_slack_s=0.05)
    assert "TTFT p95" in final["state"]["reason"] and "ttft_p95" in final["events"][-1]["breaches"]
    assert "error_rate" not in final["events"][-1]["breaches"]
    assert gw.metrics().value("kvserve:gateway_rollout_rollbacks_total", model="chat",
                              reason="+".join(final["events"][-1]["breaches"])) == 1


def push(registry: Registry, root: Path, version: str) -> None:
    model = root / version
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "version": version}))
    registry.push(model, ModelRef("chat", version=version))


def test_a_good_version_is_promoted_through_every_step_and_its_tag_moved(upstream, processes, tmp_path):
    registry_dir = tmp_path / "registry"
    registry = Registry(open_storage(RegistryConfig(url=str(registry_dir))))
    for version in ("v1", "v2"):
        push(registry, tmp_path, version)
    registry.tag(ModelRef("chat", version="v1"), "stable")
    a_server, b_server = upstream(name="a", ttft=0.02), upstream(name="b", ttft=0.02)
    config = two_versions(a_server.url, b_server.url, rollouts={"tick_s": 0.5, "registry": str(registry_dir)})
    gw = processes.gateway(tmp_path / "gateway.yaml", config)
    thresholds = {"min_requests": 30, "min_latency_samples": 15, "latency_slack_s": 0.5}
    started = start(gw.url, steps=[20, 50], bake_s=1.0, thresholds=thresholds, tag="stable")
    assert started["weights"] == {"v1": 80.0, "v2": 20.0} and weights(gw.url) == {"v1": 80.0, "v2": 20.0}
    with Load(gw.url) as load:
        promoted_at = wait_phase(gw.url, "promoted")["events"][-1]["time"]
        wait_until(lambda: len(load.since(promoted_at + 0.1)) >= 20, 30, "no traffic after the promotion")
    final = rollout(gw.url)  # the tag moves in a thread after the promotion: by now it has
    assert [(e["event"], e["candidate_percent"]) for e in final["events"]] == [
        ("started", 20.0), ("advanced", 50.0), ("promoted", 100.0), ("tagged", 100.0)]
    assert weights(gw.url) == {"v1": 0.0, "v2": 100.0}
    assert {version for _, version, _ in load.since(promoted_at + 0.1)} == {"v2"}
    assert {status for _, _, status in load.answers} == {200}
    assert registry.tags("chat") == {"stable": "v2"}
    assert gw.metrics().value("kvserve:gateway_rollout_step", model="chat") == 2


def test_a_gateway_restarted_on_the_same_redis_resumes_the_rollout(upstream, processes, tmp_path, redis_server,
                                                                  redis_prefix):
    a_server, b_server = upstream(name="a", ttft=0.02), upstream(name="b", ttft=0.02)
    config = two_versions(a_server.url, b_server.url, redis={"url": redis_server.url, "prefix": redis_prefix})
    gw = processes.gateway(tmp_path / "gateway.yaml", config)
    thresholds = {"min_requests": 30, "min_latency_samples": 15, "latency_slack_s": 0.5}
    start(gw.url, steps=[20, 50], bake_s=3.0, thresholds=thresholds)
    with Load(gw.url):
        wait_until(lambda: rollout(gw.url)["step"] == 2, 30, "the rollout did not reach its second step", step=0.1)
    # the second step holds for 3 s whatever it measures: the restart falls within it
    gw.stop()

    again = processes.gateway(tmp_path / "gateway.yaml", config)
    resumed = rollout(again.url)
    assert (resumed["phase"], resumed["step"], resumed["events"][-1]["event"]) == ("running", 2, "restored")
    assert weights(again.url) == {"v1": 50.0, "v2": 50.0}
    assert again.metrics().value("kvserve:gateway_rollout_weight", model="chat", version="v2") == 50
    with Load(again.url):
        final = wait_phase(again.url, "promoted")
    assert [e["event"] for e in final["events"]] == ["started", "advanced", "restored", "promoted"]
    assert weights(again.url) == {"v1": 0.0, "v2": 100.0}
