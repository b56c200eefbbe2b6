"""Writes deploy/k8s/base/prometheusrule.yaml: kvserve-rules.yml as a prometheus-operator
PrometheusRule, so that the operator's Prometheus loads the same rules.

kvserve-rules.yml is the source (promtool tests it); run `python
deploy/prometheus/prometheusrule.py` after changing it (`--check` fails when the
PrometheusRule is out of date, as tests/deploy/test_k8s.py does).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).parent
RULES = HERE / "kvserve-rules.yml"
OUT = HERE.parent / "k8s" / "base" / "prometheusrule.yaml"
HEADER = "# Written by deploy/prometheus/prometheusrule.py from deploy/prometheus/kvserve-rules.yml: edit that file.\n"


class _Literal(str):
    """A multi-line string, written as a `|` block like the source file has it."""


class _Dumper(yaml.SafeDumper):
    pass


def _literal_blocks(dumper: yaml.SafeDumper, text: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|")


_Dumper.add_representer(_Literal, _literal_blocks)


def render() -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        if "\n" in rule["expr"]:
            rule["expr"] = _Literal(rule["expr"])
        for key, value in rule.get("annotations", {}).items():
            if "\n" in value:
                rule["annotations"][key] = _Literal(value)
    document = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                "metadata": {"name": "kvserve"}, "spec": {"groups": groups}}
    return HEADER + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=120)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python deploy/prometheus/prometheusrule.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
