"""The rollout admin API on a real gateway: the admin key, pause/resume/abort and what each
does to the traffic split, conflicts, and OpenAI-shaped 4xx for bad bodies."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import wait_until

from .conftest import ADMIN_KEY, chat, fast_config

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
FAST = {"min_requests": 5, "min_latency_samples": 5, "latency_slack_s": 0.25}


@pytest.fixture
def split(upstream, gateway):
    """A gateway whose model 'chat' has v1 (serving) and v2, v3 (no traffic), ticking every 0.2 s."""
    servers = {name: upstream(name=name) for name in ("v1", "v2", "v3")}
    models = {"chat": {"sticky": False, "versions": {
        name: {"weight": 1 if name == "v1" else 0, "pool": {"endpoints": [server.url]}}
        for name, server in servers.items()}}}
    return gateway(fast_config(models, rollouts={"tick_s": 0.2}))


def post(gw, path: str, body: dict | None = None, headers: dict | None = None) -> httpx.Response:
    return httpx.post(gw.url + path, json=body or {}, headers=AUTH if headers is None else headers, timeout=10)


def weights(gw) -> dict[str, float]:
    versions = httpx.get(gw.url + "/admin/state", headers=AUTH, timeout=10).json()["models"]["chat"]["versions"]
    return {name: v["weight"] for name, v in versions.items()}


def shown(gw) -> dict:
    return httpx.get(gw.url + "/admin/rollouts/chat", headers=AUTH, timeout=10).json()


def traffic(gw, n: int) -> set[str]:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        return {client.post("/v1/chat/completions", json=chat("chat")).headers["x-upstream-name"] for _ in range(n)}


def test_pause_holds_the_split_resume_moves_on_abort_sends_everything_back(split):
    gw = split
    started = post(gw, "/admin/rollouts", {"model": "chat", "from": "v1", "to": "v2", "steps": [10, 50],
                                           "bake_s": 0.5, "thresholds": FAST})
    assert started.status_code == 200 and started.json()["phase"] == "running"
    assert weights(gw) == {"v1": 90.0, "v2": 10.0, "v3": 0.0}
    paused = post(gw, "/admin/rollouts/chat/pause", {"reason": "checking a report"})
    assert paused.json()["phase"] == "paused" and paused.json()["state"]["reason"] == "checking a report"
    assert traffic(gw, 100) == {"v1", "v2"}  # enough samples and bake for a running step: paused, it holds
    wait_until(lambda: shown(gw)["step_elapsed_s"] > 1.0, 5, "no time passed")
    held = shown(gw)
    assert (held["phase"], held["step"], held["weights"]) == ("paused", 1, {"v1": 90.0, "v2": 10.0})
    assert post(gw, "/admin/rollouts/chat/pause").status_code == 409

    assert post(gw, "/admin/rollouts/chat/resume").json()["phase"] == "running"
    wait_until(lambda: (traffic(gw, 20), shown(gw)["step"])[1] == 2, 30, "the resumed rollout did not advance")
    assert weights(gw) == {"v1": 50.0, "v2": 50.0, "v3": 0.0}
    assert post(gw, "/admin/rollouts/chat/resume").status_code == 409

    aborted = post(gw, "/admin/rollouts/chat/abort", {"reason": "customer complaint"}).json()
    assert (aborted["phase"], aborted["weights"]) == ("rolled_back", {"v1": 100.0, "v2": 0.0})
    assert traffic(gw, 20) == {"v1"}
    events = [e["event"] for e in aborted["events"]]
    assert events == ["started", "paused", "resumed", "advanced", "rolled_back"]
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'kvserve:gateway_rollout_rollbacks_total{model="chat",reason="aborted"} 1.0' in metrics
    refused = post(gw, "/admin/rollouts/chat/abort")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "rollout_conflict"


def test_one_rollout_at_a_time_and_hand_set_weights_wait_for_it(split):
    gw = split
    body = {"model": "chat", "from": "v1", "to": "v2", "bake_s": 60}
    assert post(gw, "/admin/rollouts", body).status_code == 200
    second = post(gw, "/admin/rollouts", {**body, "to": "v3"})
    assert second.status_code == 409 and "already has a running rollout" in second.json()["error"]["message"]
    hand = post(gw, "/admin/weights", {"model": "chat", "weights": {"v3": 50}})
    assert hand.status_code == 409 and weights(gw)["v3"] == 0.0
    post(gw, "/admin/rollouts/chat/abort")
    assert post(gw, "/admin/rollouts", {**body, "to": "v3"}).status_code == 200
    listed = httpx.get(gw.url + "/admin/rollouts", headers=AUTH).json()
    assert listed["object"] == "list" and [(r["model"], r["to"]) for r in listed["data"]] == [("chat", "v3")]


@pytest.mark.parametrize("body, status, param", [
    ({"model": "nope", "from": "v1", "to": "v2"}, 404, "model"),
    ({"model": "chat", "from": "v1", "to": "v9"}, 404, "to"),
    ({"model": "chat", "from": "v1", "to": "v1"}, 400, "to"),
    ({"model": "chat", "from": "v1"}, 400, "to"),
    ({"model": "chat", "from": "v1", "to": "v2", "steps": [50, 20]}, 400, "steps"),
    ({"model": "chat", "from": "v1", "to": "v2", "steps": [5, 100]}, 400, "steps"),
    ({"model": "chat", "from": "v1", "to": "v2", "steps": "5,25"}, 400, "steps"),
    ({"model": "chat", "from": "v1", "to": "v2", "steps": [True]}, 400, "steps"),
    ({"model": "chat", "from": "v1", "to": "v2", "bake_s": -1}, 400, "bake_s"),
    ({"model": "chat", "from": "v1", "to": "v2", "bake_s": "300"}, 400, "bake_s"),
    ({"model": "chat", "from": "v1", "to": "v2", "thresholds": {"nope": 1}}, 400, "thresholds"),
    ({"model": "chat", "from": "v1", "to": "v2", "thresholds": {"min_requests": 1.5}}, 400, "thresholds"),
    ({"model": "chat", "from": "v1", "to": "v2", "thresholds": {"max_ttft_p95_ratio": 0.5}}, 400, "thresholds"),
    ({"model": "chat", "from": "v1", "to": "v2", "tag": "stable"}, 400, "tag"),
    ({"model": "chat", "from": "v1", "to": "v2", "extra": 1}, 400, "extra"),
])
def test_bad_start_bodies_are_refused_naming_the_field(split, body, status, param):
    answer = post(split, "/admin/rollouts", body)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"
    assert httpx.get(split.url + "/admin/rollouts", headers=AUTH).json()["data"] == [] and weights(split)["v1"] == 1.0


def test_rollout_calls_need_the_admin_key_and_an_existing_rollout(split):
    gw = split
    assert post(gw, "/admin/rollouts", {"model": "chat", "from": "v1", "to": "v2"}, headers={}).status_code == 401
    wrong = httpx.get(gw.url + "/admin/rollouts", headers={"x-admin-key": ADMIN_KEY + "x"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_admin_key"
    missing = httpx.get(gw.url + "/admin/rollouts/chat", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "rollout_not_found"
    assert post(gw, "/admin/rollouts/chat/pause").status_code == 404
    assert post(gw, "/admin/rollouts/chat/explode").status_code == 404
    assert httpx.get(gw.url + "/admin/rollouts", headers=AUTH).json() == {"object": "list", "data": []}
    post(gw, "/admin/rollouts", {"model": "chat", "from": "v1", "to": "v2", "bake_s": 60})
    bad_reason = post(gw, "/admin/rollouts/chat/pause", {"reason": 5})
    assert bad_reason.status_code == 400 and bad_reason.json()["error"]["param"] == "reason"
