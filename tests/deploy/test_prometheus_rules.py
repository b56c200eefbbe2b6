"""deploy/prometheus: the rules load in promtool, every alert has a unit test that makes it
fire and one that keeps it quiet, and every series the rules read is one kvserve exports."""

from __future__ import annotations

import yaml

from tests.deploy.conftest import DEPLOY, exported_names, need, promql_metric_names, run_tool

RULES = DEPLOY / "prometheus" / "kvserve-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "kvserve-rules-test.yml"


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def test_promtool_checks_the_rules():
    result = run_tool(need("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    result = run_tool(need("promtool"), "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_the_scrape_config_example_is_valid():
    result = run_tool(need("promtool"), "check", "config", str(DEPLOY / "prometheus" / "prometheus.example.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = set(alerts())
    assert names - firing == set(), "alerts that no unit test makes fire"
    assert names - quiet == set(), "alerts that no unit test shows quiet on a healthy series"
    assert (firing | quiet) - names == set(), "unit tests of alerts that do not exist"


def test_every_alert_carries_a_severity_and_a_runbook():
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert len(annotations["runbook"].split()) >= 30, f"{name}: the runbook says too little"


def test_rules_read_only_series_kvserve_exports():
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    known = exported_names() | recorded | {"up"}
    for rule in rules():
        names = promql_metric_names(rule["expr"])
        assert names, rule["expr"]
        assert names <= known, f"{rule.get('alert') or rule.get('record')} reads unknown series {names - known}"
