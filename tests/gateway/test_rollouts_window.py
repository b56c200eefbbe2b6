"""The rollout controller's measurements, without processes: which outcomes count, the
window since a step began, p95s, and the controller's decisions on a fake clock."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kvserve.control.rollout import Phase, RolloutPlan, Thresholds
from kvserve.gateway.audit import AuditLog, verify
from kvserve.gateway.config import parse_config
from kvserve.gateway.fleet.endpoints import EndpointRegistry
from kvserve.gateway.outcome import Outcome
from kvserve.gateway.quality.book import Comparison, QualityBook
from kvserve.gateway.rollouts.config import RolloutsConfig
from kvserve.gateway.rollouts.controller import RolloutConflict, RolloutController
from kvserve.gateway.rollouts.metrics import RolloutMetrics
from kvserve.gateway.rollouts.store import MemoryRollouts
from kvserve.gateway.rollouts.window import OutcomeWindow, p95, sample_of
from kvserve.gateway.routing.table import RoutingTable
from tests.helpers import Metrics

from .conftest import fast_config

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ok(ttft: float = 0.1, events: int = 0) -> Outcome:
    return Outcome(endpoint="e", status=200, attempts=1, ttft=ttft, forwarded=True, events=events)


def test_only_forwarded_answers_count_and_errors_have_no_latency():
    assert sample_of(Outcome(status=200, ttft=0.1), False, 0.2, 10.0) is None  # a cache hit or a replay
    assert sample_of(Outcome(status=429, forwarded=True), False, 0.2, 10.0) is None  # the client's problem
    assert sample_of(Outcome(status=499, forwarded=True), False, 0.2, 10.0) is None  # the client left
    failed = sample_of(Outcome(status=500, forwarded=True), False, 0.2, 10.0)
    assert failed is not None and failed.error and failed.ttft_s is None and failed.arrival == pytest.approx(9.8)
    no_endpoint = sample_of(Outcome(status=503, forwarded=True), False, 0.0, 10.0)
    assert no_endpoint is not None and no_endpoint.error
    broken = sample_of(Outcome(status=200, ttft=0.1, forwarded=True, error="TimeoutError"), True, 1.0, 10.0)
    assert broken is not None and broken.error


def test_time_per_output_token_is_measured_on_streams_only():
    stream = sample_of(ok(ttft=0.1, events=11), True, 1.1, 10.0)
    assert stream is not None and stream.tpot_s == pytest.approx(0.1) and stream.ttft_s == 0.1
    plain = sample_of(ok(ttft=1.1, events=0), False, 1.1, 10.0)
    assert plain is not None and plain.tpot_s is None and plain.ttft_s == 1.1


def test_p95_is_the_nearest_rank():
    assert p95([]) is None
    assert p95([float(i) for i in range(1, 101)]) == 95.0
    assert p95([3.0]) == 3.0


def test_a_window_holds_only_watched_models_and_requests_sent_since_the_step_began():
    clock = Clock(100.0)
    window = OutcomeWindow(max_samples=1000, clock=clock)
    window.record("chat", "v1", ok(), False, 0.5)
    assert window.samples == {}  # no rollout: nothing kept
    window.watch("chat", since=100.0)
    clock.now = 101.0
    window.record("chat", "v1", ok(ttft=0.2), False, 2.0)  # arrived at 99, before the step
    window.record("chat", "v1", ok(ttft=0.2), False, 0.5)
    window.record("chat", "v2", Outcome(status=500, forwarded=True), False, 0.5)
    window.record("other", "v1", ok(), False, 0.5)
    snap = window.snapshot("chat", "v1", "v2", 100.0, 101.0)
    assert (snap.baseline.requests, snap.baseline.errors, snap.baseline.ttft_p95_s) == (1, 0, 0.2)
    assert (snap.candidate.requests, snap.candidate.errors, snap.candidate.ttft_p95_s) == (1, 1, None)
    window.watch("chat", since=101.0)  # the next step: earlier samples go
    assert window.snapshot("chat", "v1", "v2", 0.0, 200.0).baseline.requests == 0
    window.unwatch("chat")
    window.record("chat", "v1", ok(), False, 0.0)
    assert window.samples == {}


def test_a_window_keeps_the_newest_samples_of_each_version():
    clock = Clock(10.0)
    window = OutcomeWindow(max_samples=100, clock=clock)
    window.watch("chat", since=0.0)
    for i in range(250):
        window.record("chat", "v1", ok(ttft=float(i)), False, 0.0)
    snap = window.snapshot("chat", "v1", "v2", 0.0, 10.0)
    assert snap.baseline.requests == 100 and snap.baseline.ttft_p95_s == 244.0


MODELS = {"chat": {"sticky": False, "versions": {"v1": {"pool": {"endpoints": ["http://127.0.0.1:9"]}},
                                                 "v2": {"weight": 0, "pool": {"endpoints": ["http://127.0.0.1:10"]}},
                                                 "v3": {"weight": 5, "pool": {"endpoints": ["http://127.0.0.1:11"]}}}}}
PLAN = RolloutPlan(steps=(10.0, 50.0), bake_s=60.0,
                   thresholds=Thresholds(min_requests=20, min_latency_samples=10, latency_slack_s=0.01))


class Harness:
    """A controller over a real routing table, a memory store and a fake clock."""

    def __init__(self, store: MemoryRollouts | None = None, clock: Clock | None = None) -> None:
        config = parse_config(fast_config(MODELS))
        self.table = RoutingTable.build(config, EndpointRegistry(config.breaker, lambda url, state: None))
        self.clock = clock or Clock()
        self.registry = CollectorRegistry()
        self.store = store or MemoryRollouts()
        self.book = QualityBook()
        self.audit_sink = io.BytesIO()
        audit = AuditLog(self.audit_sink, clock=self.clock, owned=False)
        self.controller = RolloutController(RolloutsConfig(), self.store, lambda: self.table,
                                            RolloutMetrics(self.registry), self.clock, self.book, lambda: audit)

    def compared(self, n: int, similarity: float, primary: str = "v1") -> None:
        """`n` shadow answers of v2 compared with `primary`'s, as the mirror records them."""
        for i in range(n):
            self.book.of("chat", "v2").add(Comparison(f"r{i}", primary, similarity > 0.99, similarity, 10, 10, 0.1, 0.1))

    def audit_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_sink.getvalue().splitlines()]

    def weights(self) -> dict[str, float]:
        return {name: v.weight for name, v in self.table.models["chat"].versions.items()}

    def traffic(self, seconds: float, per_second: int, b_error_rate: float = 0.0, b_ttft: float = 0.1) -> None:
        """Requests split by the current weights, arriving over `seconds` of fake time."""
        w = self.controller.window
        b_share, b_sent = self.weights()["v2"] / 100, 0
        for i in range(int(seconds * per_second)):
            self.clock.now += 1 / per_second
            version = "v2" if (i % 100) < b_share * 100 else "v1"
            failed = version == "v2" and b_sent % 10 < b_error_rate * 10
            b_sent += version == "v2"
            outcome = Outcome(status=500, forwarded=True) if failed else ok(0.1 if version == "v1" else b_ttft)
            w.record("chat", version, outcome, False, 0.0)

    def metrics(self) -> Metrics:
        return Metrics(generate_latest(self.registry).decode())


def test_a_good_version_advances_step_by_step_then_is_promoted():
    h = Harness()
    rollout = asyncio.run(h.controller.begin("chat", "v1", "v2", PLAN, None))
    assert h.weights() == {"v1": 90.0, "v2": 10.0, "v3": 0.0}  # the rollout owns the split
    h.traffic(30, 20)
    asyncio.run(h.controller.tick())
    assert rollout.state.step == 0 and "baking" in rollout.last.reason
    assert (rollout.window["baseline"]["requests"], rollout.window["candidate"]["requests"]) == (540, 60)
    h.traffic(31, 20)
    asyncio.run(h.controller.tick())
    assert rollout.state.step == 1 and h.weights() == {"v1": 50.0, "v2": 50.0, "v3": 0.0}
    asyncio.run(h.controller.tick())  # a new step: its window is empty, it holds
    assert rollout.state.step == 1 and "too few samples" in rollout.last.reason
    h.traffic(61, 10)
    asyncio.run(h.controller.tick())
    assert rollout.state.phase is Phase.PROMOTED and h.weights() == {"v1": 0.0, "v2": 100.0, "v3": 0.0}
    assert [e["event"] for e in rollout.events] == ["started", "advanced", "promoted"]
    m = h.metrics()
    assert m.value("kvserve:gateway_rollout_weight", model="chat", version="v2") == 100.0
    assert m.value("kvserve:gateway_rollout_state", model="chat", state="promoted") == 1.0
    assert m.value("kvserve:gateway_rollout_events_total", model="chat", event="advanced") == 1.0


def test_a_breach_rolls_back_at_the_first_tick_with_enough_samples_and_says_why():
    h = Harness()
    rollout = asyncio.run(h.controller.begin("chat", "v1", "v2", PLAN, None))
    h.traffic(1, 100, b_error_rate=0.3)  # 10 of B's requests: too few to judge
    asyncio.run(h.controller.tick())
    assert rollout.state.phase is Phase.RUNNING
    h.traffic(5, 100, b_error_rate=0.3)
    asyncio.run(h.controller.tick())
    assert rollout.state.phase is Phase.ROLLED_BACK and "error rate 30.0%" in rollout.state.reason
    assert h.weights()["v2"] == 0.0 and h.weights()["v1"] == 100.0
    assert rollout.events[-1]["breaches"] == ["error_rate"]
    assert h.metrics().value("kvserve:gateway_rollout_rollbacks_total", model="chat", reason="error_rate") == 1.0
    assert h.controller.window.samples == {}  # nothing more is kept for a finished rollout


def test_slow_first_tokens_roll_back():
    h = Harness()
    rollout = asyncio.run(h.controller.begin("chat", "v1", "v2", PLAN, None))
    h.traffic(6, 100, b_ttft=0.3)
    asyncio.run(h.controller.tick())
    assert rollout.state.phase is Phase.ROLLED_BACK and "TTFT p95 300 ms vs baseline 100 ms" in rollout.state.reason


def test_one_active_rollout_per_model_and_weights_are_held_against_reloads():
    h = Harness()
    asyncio.run(h.controller.begin("chat", "v1", "v2", PLAN, None))
    with pytest.raises(RolloutConflict):
        asyncio.run(h.controller.begin("chat", "v1", "v3", PLAN, None))
    h.table.models["chat"].versions["v3"].weight = 50  # as a reload would reset it
    h.controller.reassert()
    assert h.weights() == {"v1": 90.0, "v2": 10.0, "v3": 0.0}
    asyncio.run(h.controller.abort("chat", "enough"))
    assert h.weights()["v2"] == 0.0
    assert h.metrics().value("kvserve:gateway_rollout_rollbacks_total", model="chat", reason="aborted") == 1.0
    asyncio.run(h.controller.begin("chat", "v1", "v3", PLAN, None))  # a finished rollout makes way


def test_a_new_controller_on_the_same_store_resumes_at_the_step_with_its_weights():
    store, clock = MemoryRollouts(), Clock()
    first = Harness(store, clock)
    asyncio.run(first.controller.begin("chat", "v1", "v2", PLAN, None))
    first.traffic(61, 20)
    asyncio.run(first.controller.tick())
    assert first.controller.get("chat").state.step == 1

    second = Harness(store, clock)  # a restarted gateway: fresh table (config weights), no samples
    assert second.weights() == {"v1": 1.0, "v2": 0.0, "v3": 5.0}
    asyncio.run(second.controller.tick())
    restored = second.controller.get("chat")
    assert restored.state.step == 1 and restored.state.phase is Phase.RUNNING
    assert second.weights() == {"v1": 50.0, "v2": 50.0, "v3": 0.0}
    assert restored.events[-1]["event"] == "restored"
    second.traffic(61, 10)
    asyncio.run(second.controller.tick())
    assert restored.state.phase is Phase.PROMOTED


def test_the_documented_rollout_metrics_exist():
    h = Harness()
    asyncio.run(h.controller.begin("chat", "v1", "v2", PLAN, None))
    asyncio.run(h.controller.abort("chat", "x"))
    text = generate_latest(h.registry).decode()
    documented = [line.split("`")[1] for line in OPERATIONS.read_text().splitlines()
                  if line.startswith("| `kvserve:gateway_rollout_")]
    assert len(documented) == 5
    for name in documented:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


QUALITY_PLAN = RolloutPlan(steps=(10.0, 50.0), bake_s=60.0, thresholds=Thresholds(
    min_requests=20, min_latency_samples=10, latency_slack_s=0.01, min_shadow_similarity=0.8, min_similarity_samples=10))


def test_shadow_quality_since_the_rollout_began_against_its_baseline_holds_then_rolls_back():
    h = Harness()
    h.compared(50, 1.0)  # before the rollout: not its evidence
    rollout = asyncio.run(h.controller.begin("chat", "v1", "v2", QUALITY_PLAN, None))
    h.compared(50, 0.1, primary="v3")  # against another version than A: not judged either
    h.compared(9, 0.3)
    h.traffic(61, 20)  # errors and latency fine and baked
    asyncio.run(h.controller.tick())
    assert rollout.state.phase is Phase.RUNNING and rollout.state.step == 0
    assert rollout.last.reason == "too few samples: 9 shadow similarity samples of B (need 10)"
    h.compared(1, 0.3)
    asyncio.run(h.controller.tick())
    assert rollout.state.phase is Phase.ROLLED_BACK and h.weights()["v2"] == 0.0
    assert rollout.state.reason == "shadow similarity 0.300 over 10 samples (minimum 0.8)"
    assert rollout.window["quality"]["similarities"] == 10 and rollout.window["quality"]["similarity_mean"] == 0.3
    assert h.metrics().value("kvserve:gateway_rollout_rollbacks_total", model="chat",
                             reason="shadow_similarity") == 1.0
    lines = h.audit_lines()
    assert [(line["kind"], line["event"]) for line in lines] == [("rollout", "started"), ("rollout", "rolled_back")]
    assert lines[-1]["breaches"] == ["shadow_similarity"] and lines[-1]["reason"] == rollout.state.reason
    assert verify(h.audit_sink.getvalue().splitlines(keepends=True))[1] == []


def test_a_candidate_that_matches_its_baseline_advances():
    h = Harness()
    rollout = asyncio.run(h.controller.begin("chat", "v1", "v2", QUALITY_PLAN, None))
    h.compared(10, 0.95)
    h.traffic(61, 20)
    asyncio.run(h.controller.tick())
    assert rollout.state.step == 1 and rollout.events[-1]["event"] == "advanced"
