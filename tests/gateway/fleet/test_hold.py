"""Holding requests while a model has no ready endpoint: answered once one joins, 503 after the wait."""

from __future__ import annotations

import threading
import time

import httpx

from tests.helpers import scrape, wait_until

from ..conftest import ADMIN_KEY, chat, fast_config

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
EMPTY = {"fake": {"pool": {"endpoints": []}}}


def held(gw) -> float:
    return scrape(gw.url).value("kvserve:gateway_held_requests", model="fake")


def test_a_held_request_is_answered_when_an_endpoint_joins(upstream, gateway):
    gw = gateway(fast_config(EMPTY, hold={"timeout_s": 20, "poll_s": 0.02}))
    answers: list[httpx.Response] = []
    client = threading.Thread(target=lambda: answers.append(
        httpx.post(gw.url + "/v1/chat/completions", json=chat(), timeout=30)))
    client.start()
    wait_until(lambda: held(gw) == 1, 10, "the request was not held (gauge never showed it)")
    up = upstream(name="late")
    joined = time.monotonic()
    added = httpx.post(gw.url + "/admin/endpoints/add", headers=AUTH, json={"model": "fake", "url": up.url})
    assert added.status_code == 200
    client.join(15)
    assert answers and answers[0].status_code == 200 and answers[0].headers["x-upstream-name"] == "late"
    assert time.monotonic() - joined < 2.0  # answered as soon as the endpoint joined, not at the timeout
    assert held(gw) == 0


def test_the_wait_is_bounded_then_503_with_retry_after(gateway):
    gw = gateway(fast_config(EMPTY, hold={"timeout_s": 0.4, "retry_after_s": 7}))
    started = time.monotonic()
    response = httpx.post(gw.url + "/v1/chat/completions", json=chat(), timeout=10)
    waited = time.monotonic() - started
    assert response.status_code == 503 and response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "no_ready_replica"
    assert 0.4 <= waited < 5
    assert held(gw) == 0


def test_without_hold_a_model_with_no_endpoint_fails_at_once(gateway):
    gw = gateway(fast_config(EMPTY))
    response = httpx.post(gw.url + "/v1/chat/completions", json=chat(), timeout=10)
    assert response.status_code == 503 and response.json()["error"]["code"] == "no_healthy_endpoint"
    assert httpx.get(gw.url + "/ready").status_code == 503  # nothing to send requests to


def test_a_holding_gateway_is_ready_with_no_endpoint(gateway):
    gw = gateway(fast_config(EMPTY, hold={"timeout_s": 5}))
    assert httpx.get(gw.url + "/ready").status_code == 200  # it must receive the request that wakes the fleet
