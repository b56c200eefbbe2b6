"""The admin API: key checks, runtime weights, draining, adding and removing endpoints."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import yaml

from tests.helpers import wait_until

from .conftest import ADMIN_KEY, chat, fast_config, one_pool

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


def names(gw, n: int, **body) -> Counter:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        return Counter(client.post("/v1/chat/completions", json=chat(**body)).headers["x-upstream-name"]
                       for _ in range(n))


def test_the_admin_key_is_required_and_checked(upstream, gateway):
    gw = gateway(fast_config(one_pool([upstream().url])))
    assert httpx.get(gw.url + "/admin/state").status_code == 401
    wrong = httpx.get(gw.url + "/admin/state", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    assert httpx.get(gw.url + "/admin/state", headers={"x-admin-key": ADMIN_KEY}).status_code == 200
    assert httpx.get(gw.url + "/admin/nothing", headers=AUTH).status_code == 404


def test_without_a_configured_key_the_admin_api_is_off(upstream, gateway):
    config = fast_config(one_pool([upstream().url]))
    config["admin"] = {}
    gw = gateway(config)
    assert httpx.get(gw.url + "/admin/state", headers=AUTH).status_code == 404


def test_state_describes_models_and_endpoints(upstream, gateway):
    up = upstream()
    gw = gateway(fast_config(one_pool([up.url], "kv_aware")))
    state = httpx.get(gw.url + "/admin/state", headers=AUTH).json()
    assert state["models"]["fake"]["versions"]["default"]["pool"] == {"policy": "kv_aware", "endpoints": [up.url]}
    assert state["endpoints"][0]["url"] == up.url and state["endpoints"][0]["breaker"] == "closed"


def test_weights_changed_at_runtime_show_in_the_observed_split(upstream, gateway):
    one, two = upstream(name="one"), upstream(name="two")
    models = {"chat": {"sticky": False, "versions": {"v1": {"weight": 100, "pool": {"endpoints": [one.url]}},
                                                     "v2": {"weight": 0, "pool": {"endpoints": [two.url]}}}}}
    gw = gateway(fast_config(models))
    assert names(gw, 50, model="chat") == {"one": 50}
    changed = httpx.post(gw.url + "/admin/weights", headers=AUTH,
                         json={"model": "chat", "weights": {"v1": 70, "v2": 30}})
    assert changed.json()["weights"] == {"v1": 70.0, "v2": 30.0}
    split = names(gw, 400, model="chat")
    assert 0.23 < split["two"] / 400 < 0.37, split
    bad = httpx.post(gw.url + "/admin/weights", headers=AUTH, json={"model": "chat", "weights": {"v3": 1}})
    assert bad.status_code == 404
    assert httpx.post(gw.url + "/admin/weights", headers=AUTH,
                      json={"model": "chat", "weights": {"v1": -1}}).status_code == 400


def test_draining_lets_in_flight_requests_finish_and_sends_new_ones_elsewhere(upstream, gateway):
    slow, other = upstream(name="slow", num_tokens=10, tokens_per_second=10), upstream(name="other")
    gw = gateway(fast_config(one_pool([slow.url, other.url], "round_robin")))
    gw.state.table.models["fake"].versions["default"].pool.state.counter = 1  # next pick: slow
    done = {}

    def long_request() -> None:
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=chat(stream=True), timeout=10) as r:
            done["name"], done["body"] = r.headers["x-upstream-name"], r.read()

    thread = threading.Thread(target=long_request)
    thread.start()
    wait_until(lambda: slow.app.counters.running == 1, 5, "the long request did not start")
    drained = httpx.post(gw.url + "/admin/endpoints/drain", headers=AUTH, json={"url": slow.url}).json()
    assert drained == {"url": slow.url, "draining": True, "in_flight": 1}
    assert names(gw, 6) == {"other": 6}
    thread.join()
    assert done["name"] == "slow" and done["body"].endswith(b"data: [DONE]\n\n")
    slow.app.config.tokens_per_second = 0  # fast from now on
    httpx.post(gw.url + "/admin/endpoints/undrain", headers=AUTH, json={"url": slow.url})
    assert names(gw, 6)["slow"] == 3


def test_endpoints_added_and_removed_at_runtime(upstream, gateway):
    first, extra = upstream(name="first"), upstream(name="extra")
    gw = gateway(fast_config(one_pool([first.url], "round_robin")))
    added = httpx.post(gw.url + "/admin/endpoints/add", headers=AUTH, json={"model": "fake", "url": extra.url + "/"})
    assert added.json()["pool"] == [first.url, extra.url]
    assert names(gw, 6) == {"first": 3, "extra": 3}
    removed = httpx.post(gw.url + "/admin/endpoints/remove", headers=AUTH, json={"url": extra.url})
    assert removed.json()["removed_from_pools"] == 1
    assert names(gw, 4) == {"first": 4}
    assert httpx.post(gw.url + "/admin/endpoints/remove", headers=AUTH, json={"url": extra.url}).status_code == 404
    assert httpx.post(gw.url + "/admin/endpoints/add", headers=AUTH,
                      json={"model": "fake", "url": "nonsense"}).status_code == 400
    assert httpx.post(gw.url + "/admin/endpoints/add", headers=AUTH,
                      json={"model": "fake", "version": "v9", "url": extra.url}).status_code == 404


def test_reload_through_the_admin_api_and_a_bad_file_keeps_the_running_config(upstream, gateway, tmp_path):
    one, two = upstream(name="one"), upstream(name="two")
    path = tmp_path / "gateway.yaml"
    config = fast_config(one_pool([one.url]))
    path.write_text(yaml.safe_dump(config))
    gw = gateway(config, path)
    path.write_text(yaml.safe_dump(fast_config(one_pool([two.url]))))
    assert httpx.post(gw.url + "/admin/reload", headers=AUTH).status_code == 200
    assert names(gw, 3) == {"two": 3}
    path.write_text("models: {fake: {pool: {policy: nope}}}")
    failed = httpx.post(gw.url + "/admin/reload", headers=AUTH)
    assert failed.status_code == 400 and "models.fake.pool.policy" in failed.json()["error"]["message"]
    assert names(gw, 3) == {"two": 3}
