"""Writes the Grafana dashboards of kvserve (deploy/grafana/dashboards/*.json).

The JSON files are committed; this script is their source. Edit a panel here, then run
`python deploy/grafana/dashboards.py` (or `--check`, which fails when a file is out of
date, as tests/deploy/test_grafana.py does). Every query reads the Prometheus data
source chosen in the `datasource` variable, so the dashboards work with any name.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT_DIR = Path(__file__).parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "[$__rate_interval]"


@dataclass
class Panel:
    title: str
    unit: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    description: str = ""
    kind: str = "timeseries"
    width: int = 12


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    variables: list[dict]
    rows: list[tuple[str, list[Panel]]] = field(default_factory=list)


def query_variable(name: str, label: str, metric: str, multi: bool = True) -> dict:
    """A variable listing `label`'s values on `metric`; All matches every value (and none)."""
    definition = f"label_values({metric}, {label})"
    return {
        "name": name, "label": name.replace("_", " "), "type": "query", "datasource": DATASOURCE,
        "definition": definition, "query": {"query": definition, "refId": name}, "refresh": 2,
        "includeAll": True, "multi": multi, "allValue": ".*", "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "hide": 0,
    }


DATASOURCE_VARIABLE = {
    "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
    "refresh": 1, "hide": 0, "current": {},
}


def quantiles(metric: str, selector: str, by: str, legend: str) -> list[tuple[str, str]]:
    """p50 and p99 of a histogram, grouped by `by`."""
    return [(f"histogram_quantile({q}, {rate(metric + '_bucket', selector, 'le, ' + by)})",
             f"p{round(q * 100)} {legend}") for q in (0.5, 0.99)]


def rate(metric: str, selector: str, by: str) -> str:
    matchers = f"{{{selector}}}" if selector else ""
    return f"sum by ({by}) (rate({metric}{matchers}{RATE}))"


def ratio(numerator: str, denominator: str) -> str:
    return f"{numerator}\n  / {denominator}"


# --- fleet: per model and version --------------------------------------------------------

F = 'model_name=~"$model", version=~"$version"'
BY = "model_name, version"
MV = "{{model_name}} {{version}}"

FLEET = Dashboard(
    uid="kvserve-fleet",
    title="kvserve / fleet",
    description="Every replica of every model, grouped by model and version.",
    variables=[DATASOURCE_VARIABLE, query_variable("model", "model_name", "vllm:num_requests_running"),
               query_variable("version", "version", 'vllm:num_requests_running{model_name=~"$model"}')],
    rows=[
        ("Traffic", [
            Panel("Requests finished / s", "reqps", [(rate("vllm:request_success_total", F, BY), MV)],
                  "Requests that ended (stop, length or abort), per second."),
            Panel("Errors by type / s", "reqps",
                  [(rate("kvserve:request_rejected_total", F, f"{BY}, reason"), MV + " {{reason}}")],
                  "Requests the replicas refused or ended early: queue_full, invalid, timeout, engine_dead."),
            Panel("Output tokens / s", "short", [(rate("vllm:generation_tokens_total", F, BY), MV)]),
            Panel("Prompt tokens / s", "short", [(rate("vllm:prompt_tokens_total", F, BY), MV)]),
        ]),
        ("Latency", [
            Panel("Time to first token", "s", quantiles("vllm:time_to_first_token_seconds", F, BY, MV),
                  "Arrival at the replica to the first token, p50 and p99."),
            Panel("Time per output token", "s", quantiles("vllm:inter_token_latency_seconds", F, BY, MV),
                  "Gap between two tokens of a request (TPOT), p50 and p99."),
            Panel("End-to-end latency", "s", quantiles("vllm:e2e_request_latency_seconds", F, BY, MV)),
            Panel("Queue time", "s", quantiles("vllm:request_queue_time_seconds", F, BY, MV),
                  "Arrival to first scheduled."),
        ]),
        ("Engine", [
            Panel("Running and waiting requests", "short",
                  [(f"sum by ({BY}) (vllm:num_requests_running{{{F}}})", "running " + MV),
                   (f"sum by ({BY}) (vllm:num_requests_waiting{{{F}}})", "waiting " + MV)]),
            Panel("KV cache usage", "percentunit",
                  [(f"avg by ({BY}) (vllm:kv_cache_usage_perc{{{F}}})", "mean " + MV),
                   (f"max by ({BY}) (vllm:kv_cache_usage_perc{{{F}}})", "fullest replica " + MV)]),
            Panel("Prefix cache hit rate", "percentunit",
                  [(ratio(rate("vllm:prefix_cache_hits_total", F, BY), rate("vllm:prefix_cache_queries_total", F, BY)),
                    MV)],
                  "Share of prompt tokens found in the prefix cache."),
            Panel("Preemptions / s", "short", [(rate("vllm:num_preemptions_total", F, BY), MV)],
                  "Requests preempted (recomputed later) because the KV cache ran out."),
            Panel("Replicas reporting", "short", [(f"count by ({BY}) (vllm:num_requests_running{{{F}}})", MV)],
                  kind="stat", width=24),
        ]),
    ],
)

# --- per replica -------------------------------------------------------------------------

I = 'model_name=~"$model", instance=~"$instance"'
BI = "instance"
LI = "{{instance}}"

REPLICA = Dashboard(
    uid="kvserve-replica",
    title="kvserve / replicas",
    description="One line per replica (Prometheus instance): load, cache, latency and engine steps.",
    variables=[DATASOURCE_VARIABLE, query_variable("model", "model_name", "vllm:num_requests_running"),
               query_variable("instance", "instance", 'vllm:num_requests_running{model_name=~"$model"}')],
    rows=[
        ("Load", [
            Panel("Running requests", "short", [(f"sum by ({BI}) (vllm:num_requests_running{{{I}}})", LI)]),
            Panel("Waiting requests", "short", [(f"sum by ({BI}) (vllm:num_requests_waiting{{{I}}})", LI)]),
            Panel("KV cache usage", "percentunit", [(f"max by ({BI}) (vllm:kv_cache_usage_perc{{{I}}})", LI)]),
            Panel("Output tokens / s", "short", [(rate("vllm:generation_tokens_total", I, BI), LI)]),
        ]),
        ("Latency", [
            Panel("Time to first token", "s", quantiles("vllm:time_to_first_token_seconds", I, BI, LI)),
            Panel("Time per output token", "s", quantiles("vllm:inter_token_latency_seconds", I, BI, LI)),
        ]),
        ("Engine", [
            Panel("Mean engine step", "s",
                  [(ratio(rate("kvserve:engine_step_seconds_total", I, BI), rate("kvserve:engine_steps_total", I, BI)),
                    LI)], "Wall time per engine step (schedule, forward, sample)."),
            Panel("Engine busy", "percentunit", [(rate("kvserve:engine_step_seconds_total", I, BI), LI)],
                  "Share of wall time the engine loop spent in steps."),
            Panel("Prefix cache hit rate", "percentunit",
                  [(ratio(rate("vllm:prefix_cache_hits_total", I, BI), rate("vllm:prefix_cache_queries_total", I, BI)),
                    LI)]),
            Panel("Preemptions / s", "short", [(rate("vllm:num_preemptions_total", I, BI), LI)]),
            Panel("Errors by type / s", "reqps",
                  [(rate("kvserve:request_rejected_total", I, f"{BI}, reason"), LI + " {{reason}}")], width=24),
        ]),
    ],
)

# --- gateway -----------------------------------------------------------------------------

G = 'model=~"$model"'
GM = "{{model}} {{version}}"
REFUSED = "kvserve:gateway_refused_requests_total"

GATEWAY = Dashboard(
    uid="kvserve-gateway",
    title="kvserve / gateway",
    description="The gateways in front of the replicas: answers, refusals, cache, routing and breakers.",
    variables=[DATASOURCE_VARIABLE, query_variable("model", "model", "kvserve:gateway_requests_total")],
    rows=[
        ("Answers", [
            Panel("Requests / s by status", "reqps",
                  [(rate("kvserve:gateway_requests_total", G, "model, version, status"), GM + " {{status}}")]),
            Panel("Errors / s by status", "reqps",
                  [(rate("kvserve:gateway_requests_total", G + ', status!~"2.."', "model, status"),
                    "{{model}} {{status}}")], "Every answer that is not a 2xx, 429s included."),
            Panel("429s by limit / s", "reqps",
                  [(rate(REFUSED, 'reason=~"limit_.*"', "reason"), "{{reason}}"),
                   (rate("kvserve:gateway_shed_requests_total", G, "model, version"), "shed " + GM)],
                  "Admissions refused by a key's or tenant's limit, and low priorities shed while the "
                  "pool is saturated."),
            Panel("Refusals by reason / s", "reqps", [(rate(REFUSED, "", "reason"), "{{reason}}")],
                  "Auth, model access, content checks and limits."),
        ]),
        ("Latency", [
            Panel("Time to first token: gateway and replicas", "s",
                  quantiles("kvserve:gateway_time_to_first_token_seconds", G, "model", "gateway {{model}}")
                  + quantiles("vllm:time_to_first_token_seconds", "", "model_name", "replicas {{model_name}}"),
                  "The gap between the gateway's and the replicas' curves is what the gateway and the network "
                  "add (model names differ when versions map to other upstream names)."),
            Panel("Request duration", "s",
                  quantiles("kvserve:gateway_request_duration_seconds", G, "model, version", GM)),
            Panel("Added latency", "s", quantiles("kvserve:gateway_added_latency_seconds", G, "model, version", GM),
                  "Arrival to the first upstream call: the gateway's own time (parse, API key, limits, cache, "
                  "route), p50 and p99.", width=24),
        ]),
        ("Routing", [
            Panel("Rollout weights", "percentunit",
                  [(f"sum by (model, version) (kvserve:gateway_version_weight{{{G}}})\n  / ignoring (version) "
                    f"group_left sum by (model) (kvserve:gateway_version_weight{{{G}}})", GM)],
                  "Each version's configured share of unpinned traffic: its weight over the model's total, as "
                  "the config, `POST /admin/weights` or a rollout set it."),
            Panel("Traffic share by version", "percentunit",
                  [(f"{rate('kvserve:gateway_routing_decisions_total', G, 'model, version')}\n  / ignoring (version) "
                    f"group_left {rate('kvserve:gateway_routing_decisions_total', G, 'model')}", GM)],
                  "Observed share of routed requests per version: follows the canary weights."),
            Panel("Retries / s", "reqps",
                  [(rate("kvserve:gateway_retries_total", G, "model, version, reason"), GM + " {{reason}}")]),
            Panel("Breaker state", "short",
                  [("max by (endpoint) (kvserve:gateway_breaker_state)", "{{endpoint}}")],
                  "0 closed, 1 half-open, 2 open."),
            Panel("Breaker transitions", "short",
                  [(f"sum by (endpoint, state) (increase(kvserve:gateway_breaker_transitions_total{RATE}))",
                    "{{endpoint}} to {{state}}")]),
            Panel("In-flight requests per endpoint", "short",
                  [("sum by (endpoint) (kvserve:gateway_in_flight_requests)", "{{endpoint}}")]),
        ]),
        ("Cache, tenants and Redis", [
            Panel("Response cache / s", "reqps",
                  [(rate("kvserve:gateway_cache_requests_total", G, "model, result"), "{{model}} {{result}}")]),
            Panel("Response cache hit rate", "percentunit",
                  [(ratio(rate("kvserve:gateway_cache_requests_total", G + ', result="hit"', "model"),
                          rate("kvserve:gateway_cache_requests_total", G + ', result=~"hit|miss"', "model")),
                    "{{model}}")]),
            Panel("Tokens / s per tenant", "short",
                  [(rate("kvserve:gateway_tokens_total", G, "tenant, kind"), "{{tenant}} {{kind}}")]),
            Panel("Redis errors / s", "short",
                  [(rate("kvserve:gateway_redis_errors_total", "", "instance, op"), "{{instance}} {{op}}"),
                   (rate("kvserve:gateway_limits_unenforced_total", "", "instance"), "unenforced {{instance}}")],
                  "Failed Redis calls, and requests admitted without limits meanwhile (on_failure: open)."),
            Panel("Redis up", "short", [("min by (instance) (kvserve:gateway_redis_up)", "{{instance}}")],
                  "1 while the gateway reaches Redis (requests' calls and its background ping), 0 while not.",
                  kind="stat", width=24),
        ]),
    ],
)

DASHBOARDS = [FLEET, GATEWAY, REPLICA]


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    targets = [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
                "range": True} for i, (expr, legend) in enumerate(panel.targets)]
    return {
        "id": panel_id, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": DATASOURCE, "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": targets,
    }


def dashboard_json(dashboard: Dashboard) -> dict:
    panels: list[dict] = []
    y = 0
    for title, row in dashboard.rows:
        panels.append({"id": len(panels) + 1, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        y += 1
        x = 0
        for panel in row:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(panel_json(panel, len(panels) + 1, x, y))
            x += panel.width
        y += 8
    return {
        "uid": dashboard.uid, "title": dashboard.title, "description": dashboard.description,
        "tags": ["kvserve"], "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "refresh": "30s", "time": {"from": "now-1h", "to": "now"}, "timezone": "",
        "annotations": {"list": []}, "links": [],
        "templating": {"list": dashboard.variables}, "panels": panels,
    }


def render(dashboard: Dashboard) -> str:
    return json.dumps(dashboard_json(dashboard), indent=2) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for dashboard in DASHBOARDS:
        path = OUT_DIR / f"{dashboard.uid}.json"
        text = render(dashboard)
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    for path in stale:
        print(f"{path} is out of date: run python deploy/grafana/dashboards.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
