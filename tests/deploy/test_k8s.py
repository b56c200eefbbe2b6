"""deploy/k8s, checked offline: every overlay builds with kubectl's kustomize, each object
passes the schemas of a pinned Kubernetes version, the KEDA and prometheus-operator objects
pass their CRD schemas (check-jsonschema), and the pieces fit: kvserve's own parsers accept the
containers' arguments and the gateway's config, the grace periods cover the drains, and
Services, probes, selectors and the autoscaler's query name what really exists."""

from __future__ import annotations

import copy
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, exported_names, promql_metric_names, run_tool
from tests.deploy.manifests import CRD_SCHEMAS, KUBERNETES_VERSION, OVERLAYS, build, container, find, \
    gateway_config_text, selects


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_the_whole_stack(overlay):
    kinds = sorted((o["kind"], o["metadata"]["name"].rsplit("-", 1)[0] if o["kind"] == "ConfigMap"
                    else o["metadata"]["name"]) for o in build(overlay))
    expected = {("Deployment", "kvserve-replica"), ("Deployment", "kvserve-gateway"), ("Deployment", "kvserve-redis"),
                ("Service", "kvserve-replica"), ("Service", "kvserve-gateway"), ("ConfigMap", "kvserve-gateway"),
                ("PodDisruptionBudget", "kvserve-replica"), ("HorizontalPodAutoscaler", "kvserve-gateway"),
                ("ServiceMonitor", "kvserve-replica"), ("ServiceMonitor", "kvserve-gateway"),
                ("ScaledObject", "kvserve-replica"), ("PrometheusRule", "kvserve")}
    assert expected <= set(kinds)
    assert all(o["metadata"].get("namespace") == "kvserve" for o in build(overlay) if o["kind"] != "Namespace")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_pass_the_kubernetes_schemas(overlay):
    import kubernetes_validate

    for obj in build(overlay):
        if (obj["apiVersion"], obj["kind"]) not in CRD_SCHEMAS:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused: the API server would silently drop them,
    so a misspelt field would pass unnoticed. Go's inline `(?i)` flag, which JSON Schema's
    regex dialect lacks, is dropped (that pattern becomes case-sensitive: stricter)."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if isinstance(schema.get("pattern"), str):
            schema["pattern"] = schema["pattern"].replace("(?i)", "")
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


def check_jsonschema(objects: list[dict[str, Any]], schema: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    strict_schema = tmp / f"strict-{schema.name}"
    strict_schema.write_text(json.dumps(strict(json.loads(schema.read_text()))))
    files = []
    for i, obj in enumerate(objects):
        files.append(tmp / f"{obj['kind']}-{i}.json")
        files[-1].write_text(json.dumps(obj))
    return run_tool("check-jsonschema", "--schemafile", str(strict_schema), *map(str, files))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_crd_objects_pass_their_crd_schemas(overlay, tmp_path):
    for (api_version, kind), schema in CRD_SCHEMAS.items():
        objects = [o for o in build(overlay) if (o["apiVersion"], o["kind"]) == (api_version, kind)]
        assert objects, kind
        result = check_jsonschema(objects, schema, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_misspelt_crd_field_is_refused(tmp_path):
    scaled = copy.deepcopy(find("gpu", "ScaledObject", "kvserve-replica"))
    scaled["spec"]["minReplicas"] = scaled["spec"].pop("minReplicaCount")  # HPA's spelling, not KEDA's
    result = check_jsonschema([scaled], CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")], tmp_path)
    assert result.returncode != 0 and "minReplicas" in result.stdout


def test_the_prometheusrule_carries_the_tested_rules():
    result = subprocess.run([sys.executable, str(DEPLOY / "prometheus" / "prometheusrule.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rules = yaml.safe_load((DEPLOY / "prometheus" / "kvserve-rules.yml").read_text())
    assert find("gpu", "PrometheusRule", "kvserve")["spec"]["groups"] == rules["groups"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_loads_its_configmap(overlay, tmp_path):
    from kvserve.gateway.config import load_config

    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_config_text(overlay))
    config = load_config(path)
    assert (config.server.host, config.server.port) == ("0.0.0.0", 8080)
    services = {o["metadata"]["name"]: o for o in build(overlay) if o["kind"] == "Service"}
    pods = find(overlay, "Deployment", "kvserve-replica")["spec"]["template"]["metadata"]["labels"]
    namespace = find(overlay, "Namespace", "kvserve")["metadata"]["name"]
    for model in config.models.values():
        for version in model.versions.values():
            for endpoint in version.pool.endpoints:
                host, port = endpoint.url.removeprefix("http://").split(":")
                service = services[host]
                assert int(port) in [p["port"] for p in service["spec"]["ports"]]
                assert selects(service["spec"]["selector"], pods)
            discovery = version.pool.discovery
            assert discovery is not None  # per-replica routing: every ready pod is an endpoint
            host, ns, *_ = discovery.name.split(".")
            service = services[host]
            assert ns == namespace and service["spec"].get("clusterIP") == "None"  # headless: one A record per pod
            assert not service["spec"].get("publishNotReadyAddresses")  # only ready pods get traffic
            assert discovery.port in [p["port"] for p in service["spec"]["ports"]]
            assert selects(service["spec"]["selector"], pods)
    assert config.hold.timeout_s > 0  # a request at zero replicas waits for the first one
    assert config.redis.url == f"redis://kvserve-redis:{services['kvserve-redis']['spec']['ports'][0]['port']}/0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_pod_reads_that_configmap(overlay):
    from kvserve.cli.main import build_parser

    pod = find(overlay, "Deployment", "kvserve-gateway")["spec"]["template"]["spec"]
    gateway = pod["containers"][0]
    args = build_parser(gateway["args"]).parse_args(gateway["args"])
    mount = next(m for m in gateway["volumeMounts"] if args.config.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap = find(overlay, "ConfigMap", "kvserve-gateway")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]  # the generated, hashed name
    assert args.config.removeprefix(mount["mountPath"] + "/") in configmap["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_grace_covers_its_drain(overlay, tmp_path):
    from kvserve.gateway.config import parse_config

    server = parse_config(yaml.safe_load(gateway_config_text(overlay))).server
    pod = find(overlay, "Deployment", "kvserve-gateway")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= server.drain_delay_s + server.shutdown_grace_s + 5
    gateway = pod["containers"][0]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/health"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/ready"
    # the readiness probe must notice the drain before it ends
    probe = gateway["readinessProbe"]
    assert probe["periodSeconds"] * probe.get("failureThreshold", 3) < server.drain_delay_s


def serve_settings(overlay: str) -> tuple[Any, Any]:
    """(EngineConfig, ServerSettings) of the replica's arguments, through `kvserve serve`'s parser."""
    from kvserve.cli.main import build_parser
    from kvserve.cli.serve import configs_from_args

    replica = container(overlay, "kvserve-replica")
    assert replica["command"] == ["kvserve"]
    return configs_from_args(build_parser(replica["args"]).parse_args(replica["args"]))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replica_grace_covers_prestop_and_the_servers_drain(overlay):
    from kvserve.engine.async_llm import AsyncLLM

    _, settings = serve_settings(overlay)
    pod = find(overlay, "Deployment", "kvserve-replica")["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    engine_stop = inspect.signature(AsyncLLM.shutdown).parameters["grace"].default
    needed = float(pre_stop[1]) + settings.shutdown_timeout + engine_stop
    assert pod["terminationGracePeriodSeconds"] >= needed + 5, f"needs {needed} s and a margin"
    assert settings.host == "0.0.0.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replica_probes(overlay):
    replica = container(overlay, "kvserve-replica")
    _, settings = serve_settings(overlay)
    port = next(p for p in replica["ports"] if p["name"] == "http")
    assert port["containerPort"] == settings.port
    assert replica["startupProbe"]["httpGet"]["path"] == "/health"
    assert replica["livenessProbe"]["httpGet"]["path"] == "/health"
    assert replica["readinessProbe"]["httpGet"]["path"] == "/ready"
    startup = replica["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= {"gpu": 600, "cpu": 180}[overlay], "too short for loading the model"


def test_gpu_overlay_asks_for_a_gpu_and_mounts_the_model():
    engine, _ = serve_settings("gpu")
    replica = container("gpu", "kvserve-replica")
    assert replica["resources"]["limits"]["nvidia.com/gpu"] == 1
    mount = next(m for m in replica["volumeMounts"] if engine.model.model.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"]


def test_cpu_overlay_serves_the_embedded_model_without_a_gpu():
    engine, _ = serve_settings("cpu")
    replica = container("cpu", "kvserve-replica")
    assert engine.model.model is None  # the embedded SmolLM2-135M-Instruct
    assert engine.device.device == "cpu"
    assert "nvidia.com/gpu" not in json.dumps(replica["resources"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_monitors_and_budgets_select_the_right_pods(overlay):
    objects = build(overlay)
    pods = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
            for o in objects if o["kind"] == "Deployment"}
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    assert services["kvserve-replica"]["spec"]["clusterIP"] == "None"  # headless: one record per pod
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        chosen = [s for s in services.values() if selects(monitor["spec"]["selector"]["matchLabels"],
                                                          s["metadata"]["labels"])]
        assert len(chosen) == 1, f"{monitor['metadata']['name']} would scrape each pod {len(chosen)} times"
        service = chosen[0]
        assert monitor["spec"]["endpoints"][0]["port"] in [p["name"] for p in service["spec"]["ports"]]
        job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
        assert job == monitor["metadata"]["name"], "the alert rules select jobs by these names"
        assert selects(service["spec"]["selector"], pods[job])
    for budget in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        assert selects(budget["spec"]["selector"]["matchLabels"], pods[budget["metadata"]["name"]])
    hpa = find(overlay, "HorizontalPodAutoscaler", "kvserve-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] in pods


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaled_deployments_leave_the_count_to_their_autoscaler(overlay):
    # a `replicas` field would reset the autoscaler's choice on every `kubectl apply`
    targets = [find(overlay, "HorizontalPodAutoscaler", "kvserve-gateway")["spec"]["scaleTargetRef"]["name"],
               find(overlay, "ScaledObject", "kvserve-replica")["spec"]["scaleTargetRef"]["name"]]
    for name in targets:
        assert "replicas" not in find(overlay, "Deployment", name)["spec"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_the_replicas_on_their_waiting_queue_and_wakes_them_on_held_requests(overlay):
    scaled = find(overlay, "ScaledObject", "kvserve-replica")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "kvserve-replica"
    queue, held = scaled["spec"]["triggers"]
    assert queue["type"] == held["type"] == "prometheus"
    query = queue["metadata"]["query"]
    assert promql_metric_names(query) == {"vllm:num_requests_waiting"}
    assert promql_metric_names(query) <= exported_names()
    assert 'job="kvserve-replica"' in query and 'namespace="kvserve"' in query
    # at zero replicas only the gateway sees demand: its held requests wake the first one
    query = held["metadata"]["query"]
    assert promql_metric_names(query) == {"kvserve:gateway_held_requests"} <= exported_names()
    assert 'job="kvserve-gateway"' in query and 'namespace="kvserve"' in query
    assert float(held["metadata"]["activationThreshold"]) < 1 <= float(held["metadata"]["threshold"])
    assert 0 == scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"]
