"""Every Grafana panel's query returns data from a real Prometheus scraping a real
`kvserve serve` (tiny model) and a real `kvserve gateway` (with Redis) under a little load.

Some series exist only after an event, so the load causes each: a 429 from a tight key
limit and one from priority shedding, a cache hit, a burst the replica refuses (queue
full), a dead endpoint that makes the gateway retry and open its breaker, and Redis going
away. The load runs twice, a scrape apart, so that rates of the new series are not empty.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.conftest import DEPLOY, Prometheus, has_finite_value
from tests.gateway.conftest import RedisServer, make_key
from tests.helpers import ServeProcess, ServerProcess, answers, free_port, kvserve
from tests.server.conftest import start_server

pytestmark = pytest.mark.slow

DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
RULES = DEPLOY / "prometheus" / "kvserve-rules.yml"
SYSTEM = "You are a terse assistant. Answer in one short sentence and do not repeat the question. " * 3


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL) of every target, template variables filled with All."""
    queries = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                queries.append((dashboard["title"], panel["title"], fill(target["expr"])))
    return queries


def variable_queries() -> list[tuple[str, str, str, str]]:
    """(dashboard, variable, label, PromQL listing the label's values) of each query variable."""
    out = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                metric, label = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["definition"]).groups()
                out.append((dashboard["title"], variable["name"], label, f"group by ({label}) ({fill(metric)})"))
    return out


def fill(expr: str) -> str:
    # the load lasts well under two minutes: a two-minute window sees all of it
    return re.sub(r"\$\w+", ".*", expr.replace("$__rate_interval", "2m"))


def gateway_config(tmp: Path, replica: str, redis_url: str) -> dict[str, Any]:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connect errors, a retry, an open breaker
    return {
        "server": {"log_requests": False},
        "scrape": {"interval_s": 0.2},
        "health": {"interval_s": 3600, "unhealthy_after": 10},  # the dead endpoint stays routable
        "breaker": {"consecutive_failures": 1, "cooldown_s": 300},
        "retry": {"backoff_base_s": 0.001, "backoff_max_s": 0.005},
        "shedding": {"queue_threshold": 0, "shed_at_or_above": 1},  # a known idle queue counts as full
        "redis": {"url": redis_url, "prefix": "deploy-test", "retry_after_s": 0.1},
        "auth": {"enabled": True, "keys_file": str(tmp / "keys.yaml"), "cache_s": 0},
        "cache": {"enabled": True},
        "models": {"tiny": {"sticky": False, "versions": {
            "v1": {"weight": 3, "pool": {"policy": "round_robin", "endpoints": [replica, dead]}},
            "v2": {"weight": 1, "pool": {"endpoints": [replica]}},
        }}},
    }


def chat(url: str, key: str, content: str, model: str = "tiny", **extra: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", **extra.pop("headers", {})}
    body = {"model": model, "max_tokens": 8, "messages": [{"role": "system", "content": SYSTEM},
                                                            {"role": "user", "content": content}], **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=60.0)


def load(url: str, key: str, tight_key: str, round_: int) -> None:
    """One round of traffic through the gateway; each event of it happens in every round, so
    that the second round moves the counters the first one created."""
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: chat(url, key, f"round {round_} question {i}", stream=i % 2 == 0),
                                range(4)))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers if a.status_code != 200]
    cached = [chat(url, key, f"round {round_} repeated", model="tiny@v1", temperature=0) for _ in range(2)]
    assert [c.headers.get("x-cache") for c in cached] == [None, "hit"]
    assert chat(url, key, "not urgent", model="tiny@v2", headers={"x-priority": "low"}).status_code == 429
    assert chat(url, tight_key, f"round {round_}").status_code == (200 if round_ == 0 else 429)
    assert chat(url, tight_key, "again").status_code == 429


def overload(replica: str) -> None:
    """A burst straight at the replica, past its --max-num-seqs and --max-waiting: refusals."""
    # answers long enough that the 16 requests all arrive while the first two still run
    body = {"model": "tiny", "max_tokens": 160, "ignore_eos": True, "messages": [{"role": "user", "content": "burst"}]}
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: httpx.post(replica + "/v1/chat/completions", json=body, timeout=60.0)
                                 .status_code, range(16)))
    assert 503 in statuses and 200 in statuses, statuses


def missing_data(prometheus: Prometheus) -> list[str]:
    missing = [f"{d} / {p}: {q}" for d, p, q in panel_queries() if not has_finite_value(prometheus.query(q))]
    for dashboard, name, label, query in variable_queries():
        if not any(r["metric"].get(label) for r in prometheus.query(query)):
            missing.append(f"{dashboard} / variable {name}: {query}")
    return missing


@dataclass
class Stack:
    replica: ServeProcess
    redis: RedisServer
    gateway: ServerProcess
    prometheus: Prometheus
    key: str  # an API key without limits
    tight_key: str  # one request per minute


def prometheus_config(replica_port: int, gateway_port: int) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "kvserve-replica", "static_configs": [
                {"targets": [f"127.0.0.1:{replica_port}"], "labels": {"version": "v1"}}]},
            {"job_name": "kvserve-gateway", "static_configs": [{"targets": [f"127.0.0.1:{gateway_port}"]}]},
        ],
    }


@pytest.fixture
def stack(tiny_llama, tmp_path_factory):
    """Replica, Redis, gateway and Prometheus, started in that order and stopped in reverse."""
    tmp = tmp_path_factory.mktemp("deploy-live")
    with ExitStack() as stop:
        replica = start_server(tmp_path_factory, tiny_llama, "--served-model-name", "tiny", "--max-model-len", "256",
                               "--max-num-seqs", "2", "--max-waiting", "6")
        stop.callback(replica.stop)
        redis = RedisServer(tmp).start()
        stop.callback(redis.kill)
        key = make_key(tmp / "keys.yaml", tenant="acme")
        tight_key = make_key(tmp / "keys.yaml", tenant="tight", requests_per_minute=1)
        (tmp / "gateway.yaml").write_text(yaml.safe_dump(gateway_config(tmp, replica.url, redis.url)))
        port = free_port()
        gateway = ServerProcess(kvserve("gateway", "--config", str(tmp / "gateway.yaml"), "--port", str(port),
                                        "--log-level", "warning"), port, tmp / "gateway.log", stop_timeout=10)
        stop.callback(gateway.stop)
        gateway.start("/health", ready=answers)
        prometheus = Prometheus(tmp, prometheus_config(replica.port, port))
        stop.callback(prometheus.stop)
        prometheus.launch().wait_ready().wait_scraped(2)
        yield Stack(replica, redis, gateway, prometheus, key, tight_key)


def test_every_panel_returns_data(stack):
    for round_ in range(2):
        load(stack.gateway.url, stack.key, stack.tight_key, round_)
        overload(stack.replica.url)
        time.sleep(1.5)  # a scrape between the rounds
    stack.redis.kill()  # the last event: requests now pass without limits and count Redis errors
    assert [chat(stack.gateway.url, stack.key, f"after redis {i}").status_code for i in range(2)] == [200, 200]

    deadline = time.monotonic() + 20
    while (missing := missing_data(stack.prometheus)) and time.monotonic() < deadline:
        time.sleep(1.0)
    assert missing == [], "panels or variables without data:\n" + "\n".join(missing)
    unhealthy = [r["name"] for g in stack.prometheus.get("/api/v1/rules")["groups"] for r in g["rules"]
                 if r["health"] != "ok"]
    assert unhealthy == [], f"rules that failed to evaluate on real series: {unhealthy}"
