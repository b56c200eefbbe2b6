"""Rollouts judged on the quality of B's answers by a real gateway process: B's shadow
answers against A's (MiniLM similarity, greedy exact match) and clients' scores. Fake
upstreams on loopback answer with fixed texts, so a B that answers differently is
different on every request; error rate and latency are left unjudged (sample minimums
never reached) where only quality is under test."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import yaml

from kvserve.gateway.audit import verify
from tests.helpers import wait_until

from .conftest import chat, fast_config
from .test_rollouts import AUTH, Load, rollout, start, two_versions, weights

DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"
UNJUDGED = {"min_requests": 100_000, "min_latency_samples": 100_000}  # only quality can decide
SHADOW = {"models": {"chat": {"candidate": "v2", "share": 1.0}}}
EMBEDDER_LOAD_S = 120  # the gateway process loads all-MiniLM-L6-v2 on its first comparison
FINAL = ("promoted", "rolled_back")
TICK = {"tick_s": 0.2}


def warmed(gw_url: str) -> None:
    """One shadowed request, compared: the embedding model is loaded before the rollout starts
    (its loading would slow every answer meanwhile), and this comparison is not the rollout's."""
    answer = httpx.post(gw_url + "/v1/chat/completions", json=chat("chat", temperature=0), timeout=10)
    assert answer.status_code == 200

    def compared() -> bool:
        report = httpx.get(gw_url + "/admin/quality", headers=AUTH, timeout=10).json()["models"]
        return report.get("chat", {}).get("v2", {}).get("compared", 0) >= 1

    wait_until(compared, EMBEDDER_LOAD_S, "the shadow answer was not compared (embedding model not loaded?)",
               step=0.2)


def finished(gw_url: str, timeout: float = 60) -> dict[str, Any]:
    """The rollout once promoted or rolled back."""
    wait_until(lambda: rollout(gw_url)["phase"] in FINAL, timeout, "the rollout did not finish", step=0.1)
    return rollout(gw_url)


def test_a_candidate_that_answers_differently_is_rolled_back_for_its_shadow_similarity(upstream, processes,
                                                                                      tmp_path: Path):
    a = upstream(name="a")
    b = upstream(name="b", tokens=["Paris ", "is ", "the ", "capital "])
    audit = tmp_path / "audit.jsonl"
    gw = processes.gateway(tmp_path / "gateway.yaml",
                           two_versions(a.url, b.url, shadow=SHADOW, rollouts=TICK,
                                        audit={"path": str(audit), "requests": False}))
    warmed(gw.url)
    thresholds = {**UNJUDGED, "min_shadow_similarity": 0.8, "min_similarity_samples": 5}
    start(gw.url, steps=[50], bake_s=120, thresholds=thresholds)
    with Load(gw.url, threads=2, temperature=0):
        final = finished(gw.url)
    assert final["phase"] == "rolled_back", final["state"]
    quality = final["window"]["quality"]
    assert quality["similarities"] >= 5 and quality["similarity_mean"] < 0.5, quality
    assert final["state"]["reason"].startswith("shadow similarity ") and final["state"]["reason"].endswith(
        "(minimum 0.8)")
    assert final["events"][-1]["breaches"] == ["shadow_similarity"]
    assert weights(gw.url) == {"v1": 100.0, "v2": 0.0}
    metrics = gw.metrics()
    assert metrics.value("kvserve:gateway_rollout_rollbacks_total", model="chat", reason="shadow_similarity") == 1
    lines = [json.loads(line) for line in audit.read_bytes().splitlines()]
    rolled = [line for line in lines if line["kind"] == "rollout" and line["event"] == "rolled_back"]
    assert len(rolled) == 1 and rolled[0]["breaches"] == ["shadow_similarity"]
    assert rolled[0]["reason"] == final["state"]["reason"] and rolled[0]["model"] == "chat"
    assert verify(audit.read_bytes().splitlines(keepends=True))[1] == []
    report = httpx.get(gw.url + "/admin/quality", headers=AUTH, timeout=10).json()["models"]["chat"]["v2"]
    assert report["compared"] >= 5 and report["exact_match_rate"] == 0.0


def test_a_candidate_that_answers_alike_is_promoted_after_its_quality_was_judged(upstream, processes, tmp_path):
    a, b = upstream(name="a"), upstream(name="b")  # the same answer
    gw = processes.gateway(tmp_path / "gateway.yaml", two_versions(a.url, b.url, shadow=SHADOW, rollouts=TICK))
    warmed(gw.url)
    thresholds = {"min_requests": 20, "min_latency_samples": 10, "latency_slack_s": 0.5,
                  "min_shadow_similarity": 0.9, "min_exact_match_rate": 0.9,
                  "min_similarity_samples": 5, "min_exact_match_samples": 5}
    start(gw.url, steps=[50], bake_s=0.5, thresholds=thresholds)
    with Load(gw.url, threads=2, temperature=0):
        final = finished(gw.url)
    assert final["phase"] == "promoted", final["state"]
    quality = final["window"]["quality"]  # what the promoting decision saw
    assert quality["similarities"] >= 5 and quality["similarity_mean"] > 0.99, quality
    assert quality["greedy"] >= 5 and quality["exact_match_rate"] == 1.0, quality
    assert [e["event"] for e in final["events"]] == ["started", "promoted"]
    assert weights(gw.url) == {"v1": 0.0, "v2": 100.0}


def scored_down(gw_url: str, n: int) -> None:
    """Send requests until `n` answers of v2 were scored thumbs down (and v1's up)."""
    down = 0
    with httpx.Client(base_url=gw_url, timeout=10) as client:
        def score(request_id: str, thumbs: str) -> bool:
            answer = client.post("/v1/feedback", json={"id": request_id, "thumbs": thumbs})
            assert answer.status_code in (200, 404), answer.text  # 404: not noted yet (in the background)
            return answer.status_code == 200

        while down < n:
            answer = client.post("/v1/chat/completions", json=chat("chat"))
            assert answer.status_code == 200
            version, request_id = answer.headers["x-model-version"], answer.headers["x-request-id"]
            thumbs = "down" if version == "v2" else "up"
            wait_until(lambda: score(request_id, thumbs), 10, "the answer could not be scored")
            down += version == "v2"


def reason(gw_url: str) -> str:
    """The reason of the rollout's latest decision ("" before its first tick)."""
    return rollout(gw_url).get("last_decision", {}).get("reason", "")


def test_low_client_scores_of_the_candidate_roll_it_back(upstream, processes, tmp_path):
    a, b = upstream(name="a"), upstream(name="b")
    gw = processes.gateway(tmp_path / "gateway.yaml", two_versions(a.url, b.url, feedback={"enabled": True}, rollouts=TICK))
    start(gw.url, steps=[50], bake_s=120,
          thresholds={**UNJUDGED, "min_feedback_score": 0.5, "min_feedback_samples": 4})
    scored_down(gw.url, 3)
    wait_until(lambda: "3 mean feedback score samples of B (need 4)" in reason(gw.url), 10,
               "the rollout did not hold for want of scores")
    assert rollout(gw.url)["phase"] == "running"
    scored_down(gw.url, 1)
    final = finished(gw.url, timeout=10)
    assert final["state"]["reason"] == "mean feedback score 0.000 over 4 samples (minimum 0.5)"
    assert final["events"][-1]["breaches"] == ["feedback_score"]
    assert gw.metrics().value("kvserve:gateway_rollout_rollbacks_total", model="chat", reason="feedback_score") == 1


def documented() -> tuple[dict[str, Any], dict[str, Any]]:
    """docs/gateway.md's example: the config and the rollout body."""
    text = DOC.read_text().split("<!-- rollout-quality:begin -->", 1)[1].split("<!-- rollout-quality:end -->", 1)[0]
    (config,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
    (body,) = re.findall(r"```json\n(.*?)```", text, re.S)
    return yaml.safe_load(config), json.loads(body)


def test_the_documented_rollout_starts_and_thresholds_nothing_measures_are_refused(upstream, processes, tmp_path):
    config, body = documented()
    a, b = upstream(name="a"), upstream(name="b")
    versions = config["models"]["chat"]["versions"]
    versions["v1"]["pool"]["endpoints"], versions["v2"]["pool"]["endpoints"] = [a.url], [b.url]
    unmeasured = processes.gateway(tmp_path / "plain.yaml", fast_config(config["models"]))
    for thresholds, words in ((body["thresholds"], "shadow.models.chat.candidate"),
                              ({"min_feedback_score": 0.5}, "feedback.enabled"),
                              ({"min_exact_match_rate": "high"}, "must be a number or null")):
        answer = httpx.post(unmeasured.url + "/admin/rollouts", headers=AUTH, timeout=10,
                            json={**body, "thresholds": thresholds})
        assert answer.status_code == 400 and words in answer.json()["error"]["message"], answer.text
        assert answer.json()["error"]["param"] == "thresholds"
    assert start(unmeasured.url, thresholds={"min_shadow_similarity": None})["thresholds"]["min_shadow_similarity"] \
        is None

    unmeasured.stop()
    no_similarity = processes.gateway(tmp_path / "exact.yaml", fast_config(
        config["models"], shadow={**config["shadow"], "similarity": False}, feedback=config["feedback"]))
    answer = httpx.post(no_similarity.url + "/admin/rollouts", headers=AUTH, timeout=10, json=body)
    assert answer.status_code == 400 and "shadow.similarity: true" in answer.json()["error"]["message"]
    no_similarity.stop()

    gw = processes.gateway(tmp_path / "gateway.yaml", fast_config(config["models"], shadow=config["shadow"],
                                                                  feedback=config["feedback"]))
    answer = httpx.post(gw.url + "/admin/rollouts", headers=AUTH, timeout=10, json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["thresholds"] | body["thresholds"] == answer.json()["thresholds"]
    assert answer.json()["weights"] == {"v1": 95.0, "v2": 5.0}
