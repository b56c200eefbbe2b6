"""API keys, limits and usage end to end: real gateways, a real fake upstream, a real Redis."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import httpx

from tests.helpers import scrape, wait_until

from ..conftest import ADMIN_KEY, bearer, chat, fast_config, make_key, one_pool


def keyed_config(keys_file, urls, **sections):
    return fast_config(one_pool(urls), auth={"enabled": True, "keys_file": str(keys_file), "cache_s": 0},
                       **sections)


def usage(gw_url: str) -> list[dict]:
    return httpx.get(gw_url + "/admin/usage", headers=bearer(ADMIN_KEY)).json()["data"]


def test_missing_wrong_and_revoked_keys_get_401_and_other_models_403(upstream, gateway, tmp_path):
    up = upstream()
    keys = tmp_path / "keys.yaml"
    good = make_key(keys, models=("fake",))
    other = make_key(keys, models=("other",))
    gw = gateway(keyed_config(keys, [up.url]))
    url = gw.url + "/v1/chat/completions"
    assert httpx.post(url, json=chat()).status_code == 401
    wrong = httpx.post(url, json=chat(), headers=bearer(good[:-3] + "abc"))
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    denied = httpx.post(url, json=chat(), headers=bearer(other))
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_not_allowed"
    assert httpx.post(url, json=chat(), headers=bearer(good)).status_code == 200
    key_id = good.split("-")[2]
    done = subprocess.run([sys.executable, "-m", "kvserve.cli.main", "keys", "revoke", key_id, "--file", str(keys)],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "revoked" in done.stdout
    assert httpx.post(url, json=chat(), headers=bearer(good)).status_code == 401


def test_keys_cli_create_list_show(tmp_path):
    keys = tmp_path / "keys.yaml"
    cli = [sys.executable, "-m", "kvserve.cli.main", "keys"]
    created = subprocess.run([*cli, "create", "--file", str(keys), "--tenant", "acme", "--models", "a,b",
                              "--rpm", "60", "--daily-tokens", "1000", "--json"], capture_output=True, text=True)
    record = json.loads(created.stdout)
    assert record["key"].startswith("sk-kvs-" + record["key_id"])
    assert record["key"] not in keys.read_text() and "key_hash" not in record
    listed = subprocess.run([*cli, "list", "--file", str(keys)], capture_output=True, text=True).stdout
    assert record["key_id"] in listed and "models=a,b" in listed and record["key"] not in listed
    shown = json.loads(subprocess.run([*cli, "show", record["key_id"], "--file", str(keys), "--json"],
                                      capture_output=True, text=True).stdout)
    assert shown["limits"]["daily_tokens"] == 1000 and not shown["revoked"]
    assert subprocess.run([*cli, "show", "nosuchid", "--file", str(keys)], capture_output=True).returncode == 1


def test_success_carries_ratelimit_headers_and_logs_never_hold_the_key(upstream, gateway, tmp_path, caplog):
    up = upstream()
    keys = tmp_path / "keys.yaml"
    key = make_key(keys, requests_per_minute=10, tokens_per_minute=5000)
    config = keyed_config(keys, [up.url])
    config["server"] = {"log_requests": True}
    gw = gateway(config)
    with caplog.at_level(logging.INFO, logger="kvserve.gateway"):
        response = httpx.post(gw.url + "/v1/chat/completions", json=chat(max_tokens=16), headers=bearer(key))
        wait_until(lambda: any("key_id" in r.getMessage() for r in caplog.records), 5, "no request log")
    assert response.headers["x-ratelimit-limit-requests"] == "10"
    assert response.headers["x-ratelimit-remaining-requests"] == "9"
    assert int(response.headers["x-ratelimit-remaining-tokens"]) < 5000
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert key.split("-")[2] in text and key not in text and key.split("-", 3)[3] not in text


def test_two_gateways_sharing_redis_admit_exactly_the_limit(processes, tmp_path, redis_server, redis_prefix):
    up = processes.upstream("--tokens-per-second", "0", "--num-tokens", "2")
    keys = tmp_path / "keys.yaml"
    key = make_key(keys, requests_per_minute=5)
    config = keyed_config(keys, [up.url], redis={"url": redis_server.url, "prefix": redis_prefix})
    gateways = [processes.gateway(tmp_path / f"gw{i}.yaml", config) for i in range(2)]
    statuses = []
    for i in range(12):
        response = httpx.post(gateways[i % 2].url + "/v1/chat/completions", json=chat(), headers=bearer(key))
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert statuses.count(200) == 5 and statuses.count(429) == 7


def test_streamed_tokens_reconcile_to_real_usage_and_the_usage_chunk_is_stripped(upstream, gateway, tmp_path):
    up = upstream(num_tokens=4)
    keys = tmp_path / "keys.yaml"
    key = make_key(keys, tokens_per_minute=100_000)
    gw = gateway(keyed_config(keys, [up.url]))
    body = chat(stream=True, max_tokens=500)
    first = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=bearer(key))
    events = [line[6:] for line in first.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and all("usage" not in e for e in events[:-1])
    charged = 100_000 - int(first.headers["x-ratelimit-remaining-tokens"])
    wait_until(lambda: usage(gw.url) and usage(gw.url)[0]["completion_tokens"] == 4, 5, "usage not settled")
    row = usage(gw.url)[0]
    assert row["requests"] == 1 and row["prompt_tokens"] >= 1
    second = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=bearer(key))
    # the 500-token estimate of the first request was replaced by its real usage
    real = row["prompt_tokens"] + row["completion_tokens"]
    remaining = int(second.headers["x-ratelimit-remaining-tokens"])
    assert 100_000 - real - charged <= remaining <= 100_000 - charged
    assert charged > 500 > real


def test_priority_tier_of_the_key_is_forwarded(upstream, gateway, tmp_path):
    up = upstream()
    keys = tmp_path / "keys.yaml"
    low = make_key(keys, priority=1)
    gw = gateway(keyed_config(keys, [up.url]))
    url = gw.url + "/v1/chat/completions"
    httpx.post(url, json=chat(), headers={**bearer(low), "x-priority": "high"})  # cannot raise its priority
    assert httpx.get(up.url + "/admin/last_request").json()["headers"]["x-priority"] == "1"
    assert "authorization" not in httpx.get(up.url + "/admin/last_request").json()["headers"]


def test_max_tokens_over_the_keys_limit_is_refused(upstream, gateway, tmp_path):
    up = upstream()
    keys = tmp_path / "keys.yaml"
    key = make_key(keys, max_tokens=64)
    gw = gateway(keyed_config(keys, [up.url]))
    response = httpx.post(gw.url + "/v1/chat/completions", json=chat(max_tokens=65), headers=bearer(key))
    assert response.status_code == 400 and response.json()["error"]["param"] == "max_tokens"


def test_usage_metrics_per_tenant(upstream, gateway, tmp_path):
    up = upstream(num_tokens=3)
    keys = tmp_path / "keys.yaml"
    key = make_key(keys, tenant="globex")
    gw = gateway(keyed_config(keys, [up.url]))
    httpx.post(gw.url + "/v1/chat/completions", json=chat(), headers=bearer(key))

    def counted() -> bool:
        return scrape(gw.url).value("kvserve:gateway_tokens_total", kind="completion", model="fake",
                                    tenant="globex") == 3

    wait_until(counted, 5, "tenant token counter missing")
    assert httpx.get(gw.url + "/admin/usage").status_code == 401


def test_the_bearer_scheme_is_case_insensitive(upstream, gateway, tmp_path):
    up = upstream()
    keys = tmp_path / "keys.yaml"
    key = make_key(keys)
    gw = gateway(keyed_config(keys, [up.url]))
    url = gw.url + "/v1/chat/completions"
    for scheme in ("bearer", "BEARER", "Bearer"):
        assert httpx.post(url, json=chat(), headers={"authorization": f"{scheme} {key}"}).status_code == 200
    assert httpx.post(url, json=chat(), headers={"authorization": f"Basic {key}"}).status_code == 401
    assert httpx.post(url, json=chat(), headers={"authorization": f"bearer {key}x"}).status_code == 401
