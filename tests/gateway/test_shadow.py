"""Shadow traffic and feedback through a real gateway: a candidate that answers differently is
reported with its similarity, a failing or hanging candidate never reaches the client or
its limits, and clients' scores are kept per model version."""

from __future__ import annotations

import time

import httpx
import pytest

from kvserve.bench.fake_upstream import FakeUpstreamConfig, FakeUpstreamServer
from tests.helpers import scrape, wait_until

from .conftest import ADMIN_KEY, GatewayThread, bearer, chat, fast_config, make_key

PRIMARY = "tok0 tok1 tok2 tok3 tok4 tok5 "


def two_versions(primary: str, candidate: str) -> dict:
    return {"versions": {"v1": {"pool": {"endpoints": [primary]}},
                         "v2": {"weight": 0, "pool": {"endpoints": [candidate]}}}}


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory):
    keys = tmp_path_factory.mktemp("shadow") / "keys.yaml"
    key, other = make_key(keys, tenant="acme"), make_key(keys, tenant="globex")
    limited = make_key(keys, tenant="initech", requests_per_minute=3)
    ups = {name: FakeUpstreamServer(FakeUpstreamConfig(num_tokens=6, tokens_per_second=0, **extra)).start()
           for name, extra in {"primary": {}, "same": {},
                               "different": {"tokens": ["Paris ", "is ", "the ", "capital ", "of ", "France. "]},
                               "failing": {"fail_rate": 1.0, "status_code": 500}, "hanging": {"hang": True}}.items()}
    p = ups["primary"].url
    models = {"fake": two_versions(p, ups["different"].url), "twin": two_versions(p, ups["same"].url),
              "broken": two_versions(p, ups["failing"].url), "stuck": two_versions(p, ups["hanging"].url)}
    shadow = {"timeout_s": 1.0, "models": {m: {"candidate": "v2", "share": 1.0} for m in models}}
    gw = GatewayThread(fast_config(models, auth={"enabled": True, "keys_file": str(keys)}, shadow=shadow,
                                   feedback={"enabled": True})).start()
    yield gw, key, other, limited
    gw.stop()
    for up in ups.values():
        up.stop()


def quality(gw) -> dict:
    return httpx.get(gw.url + "/admin/quality", headers=bearer(ADMIN_KEY)).json()["models"]


def ask(gw, key: str, model: str, stream: bool = False) -> httpx.Response:
    response = httpx.post(gw.url + "/v1/chat/completions", json=chat(model, stream=stream, temperature=0),
                          headers=bearer(key), timeout=10)
    assert response.status_code == 200
    return response


def test_a_candidate_that_answers_differently_is_reported_with_its_similarity(shadowed):
    gw, key, _, _ = shadowed
    for model in ("fake", "twin"):
        assert ask(gw, key, model).json()["choices"][0]["message"]["content"] == PRIMARY  # the client gets v1's
        assert "tok5" in ask(gw, key, model, stream=True).text

    def compared() -> bool:
        report = quality(gw)
        return all(report.get(m, {}).get("v2", {}).get("compared") == 2 for m in ("fake", "twin"))

    wait_until(compared, 90, "the shadow answers were not compared (embedding model not loaded?)", step=0.2)
    report = quality(gw)
    different, twin = report["fake"]["v2"], report["twin"]["v2"]
    assert different["exact_match_rate"] == 0.0 and twin["exact_match_rate"] == 1.0
    assert twin["similarity_min"] > 0.999 and different["similarity_mean"] < 0.6  # tokens vs a sentence
    assert different["recent"][0]["similarity"] == pytest.approx(different["similarity_mean"], abs=0.01)
    assert different["length_ratio"] == pytest.approx(len("Paris is the capital of France. ") / len(PRIMARY), abs=1e-3)
    print(f"\nsimilarity of the different candidate: {different['similarity_mean']}")
    metrics = scrape(gw.url)
    assert metrics.value("kvserve:gateway_shadow_requests_total", model="fake", version="v2", result="compared") == 2
    assert metrics.value("kvserve:gateway_shadow_exact_matches_total", model="twin", version="v2") == 2
    assert metrics.value("kvserve:gateway_shadow_similarity_count", model="fake", version="v2") == 2
    # the admin report's figures, as sums a dashboard divides
    assert metrics.value("kvserve:gateway_shadow_greedy_comparisons_total", model="fake", version="v2") == 2
    chars = {answer: metrics.value("kvserve:gateway_shadow_answer_chars_total", model="fake", version="v2",
                                   answer=answer) for answer in ("primary", "shadow")}
    assert chars["shadow"] / chars["primary"] == pytest.approx(different["length_ratio"], abs=1e-3)
    seconds = metrics.value("kvserve:gateway_shadow_answer_seconds_total", model="fake", version="v2", answer="shadow")
    assert seconds / 2 == pytest.approx(different["latency_s"]["shadow"], abs=1e-3)


def test_a_failing_or_hanging_candidate_never_affects_the_client_or_its_limits(shadowed):
    gw, _, other, limited = shadowed
    before = time.monotonic()
    for model in ("broken", "stuck"):
        assert ask(gw, other, model).json()["choices"][0]["message"]["content"] == PRIMARY
        assert ask(gw, other, model, stream=True).text.rstrip().endswith("[DONE]")
    assert time.monotonic() - before < 1.0 * 0.9 * 4  # none waited for its 1 s shadow timeout

    def failed() -> bool:
        report = quality(gw)
        return (report.get("broken", {}).get("v2", {}).get("failed") == {"shadow_error": 2}
                and report.get("stuck", {}).get("v2", {}).get("failed") == {"timeout": 2})

    wait_until(failed, 10, "the failed shadows were not reported")
    # 3 requests a minute: all 3 answered although each was copied (copies charge nothing), the 4th refused
    for model in ("fake", "broken", "stuck"):
        ask(gw, limited, model)
    refused = httpx.post(gw.url + "/v1/chat/completions", json=chat("fake"), headers=bearer(limited))
    assert refused.status_code == 429


def test_feedback_is_kept_per_version_once_per_answer_and_only_for_its_tenant(shadowed):
    gw, acme, other, _ = shadowed
    answer = ask(gw, other, "twin")
    request_id = answer.headers["x-request-id"]
    url = gw.url + "/v1/feedback"
    time.sleep(0.1)  # the version that answered is noted in the background
    scored = httpx.post(url, json={"id": request_id, "thumbs": "up"}, headers=bearer(other))
    assert scored.status_code == 200 and scored.json()["version"] == "v1"
    again = httpx.post(url, json={"id": request_id, "score": 0.2}, headers=bearer(other))
    assert again.status_code == 409 and again.json()["error"]["code"] == "feedback_exists"
    stranger = httpx.post(url, json={"id": request_id, "score": 1}, headers=bearer(acme))  # another tenant's answer
    assert stranger.status_code == 404 and stranger.json()["error"]["code"] == "answer_not_found"
    assert httpx.post(url, json={"id": request_id, "score": 2}, headers=bearer(other)).status_code == 400
    assert httpx.post(url, json={"id": request_id, "thumbs": "up"}).status_code == 401
    feedback = quality(gw)["twin"]["v1"]["feedback"]
    assert feedback == {"scores": 1, "score_mean": 1.0, "thumbs_up": 1, "thumbs_down": 0}
    assert scrape(gw.url).value("kvserve:gateway_feedback_score_sum", model="twin", version="v1") == 1.0

