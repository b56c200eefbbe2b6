"""What `kvserve up` writes in its run directory: the gateway's config and admin key,
Prometheus' config and targets, and state.json (read by `kvserve up status` and
`kvserve down`).

    run_dir/
      state.json            the launcher's pid and every process: pid, state, url, restarts
      admin.key             the gateway's admin key (mode 0600), made per run
      gateway.yaml          the generated gateway config
      prometheus.yml        with prometheus-targets.json (rewritten as replicas come and go)
      logs/<name>.log       one log per process; logs/autoscaler.jsonl: every decision
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from kvserve.control.stack_config import StackConfig
from kvserve.gateway.config import parse_config


class StackFiles:
    """Paths in the run directory, and the writers of what goes there."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.logs = run_dir / "logs"
        self.state = run_dir / "state.json"
        self.admin_key = run_dir / "admin.key"
        self.gateway_config = run_dir / "gateway.yaml"
        self.prometheus_config = run_dir / "prometheus.yml"
        self.prometheus_targets = run_dir / "prometheus-targets.json"
        self.decisions = self.logs / "autoscaler.jsonl"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def prepare(self) -> str:
        """Create the directories and a fresh admin key; returns the key."""
        self.logs.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        fd = os.open(self.admin_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
        return key

    def write_gateway_config(self, config: StackConfig) -> None:
        """The gateway's YAML, checked with the gateway's own loader first (its ConfigError if bad)."""
        data = gateway_config(config, self.admin_key)
        parse_config(json.loads(json.dumps(data, default=str)), "gateway.settings in the stack file")
        self.gateway_config.write_text(yaml.safe_dump(data, sort_keys=False))

    def write_prometheus(self, config: StackConfig) -> None:
        g = config.gateway
        data = {
            "global": {"scrape_interval": f"{config.prometheus.scrape_interval_s}s"},
            "scrape_configs": [
                {"job_name": "kvserve-gateway", "static_configs": [{"targets": [f"{g.host}:{g.port}"]}]},
                {"job_name": "kvserve-replica", "file_sd_configs": [{"files": [str(self.prometheus_targets)]}]},
            ],
        }
        self.prometheus_config.write_text(yaml.safe_dump(data, sort_keys=False))
        self.write_targets([])

    def write_targets(self, host_ports: list[str]) -> None:
        _atomic_write(self.prometheus_targets, json.dumps([{"targets": host_ports, "labels": {}}]))

    def write_state(self, state: dict[str, Any]) -> None:
        _atomic_write(self.state, json.dumps(state, indent=1))

    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state.read_text())
        except (OSError, ValueError):
            return None

    def append_decision(self, record: dict[str, Any], max_bytes: int = 10 << 20) -> None:
        """One JSON line per decision; the file rolls over to .1 past `max_bytes`."""
        if self.decisions.exists() and self.decisions.stat().st_size > max_bytes:
            self.decisions.replace(self.decisions.with_suffix(".jsonl.1"))
        with open(self.decisions, "a") as out:
            out.write(json.dumps(record) + "\n")


def gateway_config(config: StackConfig, admin_key_file: Path) -> dict[str, Any]:
    """The gateway's config: the stack's model with an empty pool that `kvserve up` fills
    as replicas get ready, and its admin API on the run's key."""
    g = config.gateway
    data: dict[str, Any] = {
        "server": {"host": g.host, "port": g.port},
        "admin": {"key_file": str(admin_key_file)},
        "hold": {"timeout_s": g.hold_timeout_s},
    }
    if config.redis.enabled:
        data["redis"] = {"url": f"redis://127.0.0.1:{config.redis.port}/0"}
    data.update(g.settings)
    data["models"] = {config.model.name: {"pool": {"policy": "least_request", "endpoints": []}}}
    return data


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

