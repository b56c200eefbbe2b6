"""Helpers for the deploy/ checks: the repository's deploy folder, a real Prometheus on a
loopback port, and the metric names that kvserve's exporters really have."""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import ServerProcess, free_port


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def need(tool: str) -> str:
    """The path of a command-line tool the check needs; CI installs them (scripts/install.sh --test)."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run scripts/install.sh --test")
    return path


def run_tool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=120)


class Prometheus(ServerProcess):
    """`prometheus` with a temporary config and TSDB, listening on 127.0.0.1 only."""

    def __init__(self, tmp: Path, config: dict[str, Any]) -> None:
        port = free_port()
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        super().__init__([need("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                          f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                          "--web.enable-lifecycle"], port, tmp / "prometheus.log", stop_timeout=20)

    def wait_ready(self, path: str = "/-/ready", timeout: float = 30.0, *args: Any) -> Prometheus:
        super().wait_ready(path, timeout, *args)
        return self

    def wait_scraped(self, targets: int, timeout: float = 15.0) -> None:
        """Until every target has been scraped once: a counter's first sample must come before
        the load, or its rate over the load is not seen."""
        deadline = time.monotonic() + timeout
        while len(self.query("up == 1")) < targets:
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus did not scrape {targets} targets: {self.get('/api/v1/targets')}")
            time.sleep(0.1)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector; AssertionError (with Prometheus' message) if it fails."""
        answer = httpx.get(self.url + "/api/v1/query", params={"query": promql}, timeout=10.0).json()
        assert answer["status"] == "success", f"{promql}: {answer.get('error')}"
        return answer["data"]["result"]

    def get(self, path: str) -> Any:
        return httpx.get(self.url + path, timeout=10.0).json()["data"]


def has_finite_value(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def exported_names() -> set[str]:
    """Every series name `kvserve serve` and `kvserve gateway` can export (counters with
    `_total`, histograms with `_bucket`, `_sum`, `_count`), from their real registries."""
    from kvserve.gateway.metrics import GatewayMetrics
    from kvserve.gateway.rollouts.metrics import RolloutMetrics
    from kvserve.server.metrics import ServerMetrics

    names: set[str] = set()
    gateway = GatewayMetrics()
    gateway.render({}, redis_up=True)  # the Redis gauge exists once the gateway has a Redis link
    RolloutMetrics(gateway.registry)  # the gateway's state registers them beside its own
    for registry in (ServerMetrics("m").registry, gateway.registry):
        for family in registry.collect():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
            names.update(family.name + suffix for suffix in suffixes)
            names.update(sample.name for sample in family.samples)
    return names


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (a plain scan: strings, label matchers,
    ranges and grouping clauses removed first; what is left and not a function is a name)."""
    import re

    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        after = text[match.end():].lstrip()
        if not after.startswith("(") and match.group().lower() not in PROMQL_WORDS:
            names.add(match.group())
    return names


# the gateway tests' real Redis, fake upstreams and in-process gateways, for the docs test
from tests.gateway.conftest import gateway, redis_server, upstream  # noqa: E402,F401
