"""deploy/grafana: the dashboards are what dashboards.py writes, read their data source
from the `datasource` variable, lay out without overlaps, use only variables they define
and only series kvserve exports; the provisioning files point at them."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, exported_names, promql_metric_names

GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}


def load(path):
    return json.loads(path.read_text())


def test_the_json_files_are_up_to_date():
    result = subprocess.run([sys.executable, str(GRAFANA / "dashboards.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_there_are_fleet_gateway_and_replica_dashboards():
    assert {load(p)["uid"] for p in DASHBOARDS} == {"kvserve-fleet", "kvserve-gateway", "kvserve-replica"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_reads_the_datasource_variable(path):
    dashboard = load(path)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panels_have_unique_ids_and_do_not_overlap(path):
    panels = load(path)["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells.get((x, y))}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_queries_use_defined_variables_and_exported_series(path):
    dashboard = load(path)
    defined = {v["name"] for v in dashboard["templating"]["list"]} | BUILTIN_VARIABLES
    known = exported_names()
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for query in queries:
        used = set(re.findall(r"\$\{?(\w+)", query))
        assert used <= defined, f"{query}: undefined {used - defined}"
        names = promql_metric_names(re.sub(r"^label_values\((.*), \w+\)$", r"\1", query))
        assert names and names <= known, f"{query}: unknown series {names - known}"


def test_provisioning_files():
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "kvserve.yml").read_text())
    assert provider["apiVersion"] == 1 and provider["providers"][0]["type"] == "file"
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasources["datasources"][0]["type"] == "prometheus"
