"""The typed configuration of `kvserve up`: one stack.yaml, validated when it is read.

A bad file raises `StackConfigError` whose message names the file and each bad field
(`replicas.max: Input should be greater than or equal to 1`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kvserve.control.autoscaler import ScalePolicy
from kvserve.yaml_file import read_yaml

RESERVED_GATEWAY_KEYS = ("server", "admin", "hold", "models")  # written by `kvserve up` itself


class StackConfigError(ValueError):
    """stack.yaml is missing, not YAML, or has an invalid field."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(Section):
    path: str = Field(min_length=1)  # `kvserve serve --model`: a directory, a hub id or a registry reference
    name: str = Field("chat", min_length=1, pattern=r"^[A-Za-z0-9._:/-]+$")  # the name clients ask for
    args: list[str] = []  # more `kvserve serve` flags, e.g. ["--max-model-len", "4096"]

    @model_validator(mode="after")
    def _no_owned_flags(self) -> ModelSection:
        owned = {"--model", "--port", "--host", "--served-model-name"}
        clash = [a for a in self.args if a.split("=", 1)[0] in owned]
        if clash:
            raise ValueError(f"args: {', '.join(clash)} is set by `kvserve up` itself")
        return self


class ReplicasSection(Section):
    min: int = Field(1, ge=0)  # fewest replicas (0: scale to zero, with the gateway holding requests)
    max: int = Field(1, ge=1)  # most replicas
    initial: int | None = Field(None, ge=0)  # replicas at start (default: min, at least 1 without autoscale)
    host: str = "127.0.0.1"  # replicas listen here
    base_port: int = Field(8100, ge=1, le=65535 - 64)  # replica i listens on base_port + i
    start_timeout_s: float = Field(600.0, gt=0)  # a replica not ready this long after its start is restarted

    @model_validator(mode="after")
    def _bounds(self) -> ReplicasSection:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.initial is not None and not self.min <= self.initial <= self.max:
            raise ValueError(f"initial ({self.initial}) is outside [min, max]")
        return self


class AutoscaleSection(Section):
    enabled: bool = False  # off: the replica count stays at `replicas.initial`
    interval_s: float = Field(2.0, gt=0)  # how often the fleet's metrics are read and a decision made
    target_waiting: float = Field(2.0, gt=0)  # queued requests per replica aimed at (engines' waiting + gateway's held)
    target_kv_usage: float = Field(0.8, gt=0, le=1)  # mean KV cache usage aimed at
    tolerance: float = Field(0.1, ge=0, lt=1)  # a signal this close to its target changes nothing
    scale_up_window_s: float = Field(0.0, ge=0)  # a scale-up needs every proposal of this window to agree
    scale_down_window_s: float = Field(300.0, ge=0)  # a scale-down needs every proposal of this window to agree
    cooldown_s: float = Field(30.0, ge=0)  # no change within this long of the previous one (waking excepted)
    max_step: int = Field(1, ge=1)  # replicas added or removed by one change at most


class GatewaySection(Section):
    host: str = "127.0.0.1"  # the OpenAI endpoint of the stack listens here
    port: int = Field(8080, ge=1, le=65535)
    hold_timeout_s: float = Field(300.0, ge=0, le=3600)  # a request at zero ready replicas waits this long
    settings: dict[str, Any] = {}  # more gateway.yaml sections (auth, limits, cache, ...), as in docs/gateway.md

    @model_validator(mode="after")
    def _not_reserved(self) -> GatewaySection:
        taken = [k for k in self.settings if k in RESERVED_GATEWAY_KEYS]
        if taken:
            raise ValueError(f"settings: {', '.join(taken)} are written by `kvserve up` itself")
        return self


class RedisSection(Section):
    enabled: bool = False  # start a redis-server for the gateway (keys, limits, caches)
    port: int = Field(6379, ge=1, le=65535)


class PrometheusSection(Section):
    enabled: bool = False  # start a Prometheus that scrapes the gateway and every replica
    port: int = Field(9090, ge=1, le=65535)
    scrape_interval_s: int = Field(5, ge=1)


class RestartSection(Section):
    backoff_base_s: float = Field(1.0, gt=0)  # first wait before restarting a process that exited
    backoff_max_s: float = Field(60.0, gt=0)  # the wait doubles per failure up to this
    reset_after_s: float = Field(60.0, gt=0)  # a process that ran this long starts over at backoff_base_s


class StackConfig(Section):
    """The whole stack: one model's replicas, the gateway in front, and the helpers."""

    run_dir: Path = Path(".kvserve")  # logs, state.json and generated configs (relative to stack.yaml)
    model: ModelSection
    replicas: ReplicasSection = ReplicasSection()
    autoscale: AutoscaleSection = AutoscaleSection()
    gateway: GatewaySection = GatewaySection()
    redis: RedisSection = RedisSection()
    prometheus: PrometheusSection = PrometheusSection()
    restart: RestartSection = RestartSection()
    stop_grace_s: float = Field(30.0, ge=0)  # on `kvserve down`: SIGTERM, then a kill after this long

    @model_validator(mode="after")
    def _consistent(self) -> StackConfig:
        if not self.autoscale.enabled and self.initial_replicas() == 0:
            raise ValueError("replicas: without autoscale.enabled the stack needs at least one replica")
        if self.replicas.min == 0 and self.gateway.hold_timeout_s == 0:
            raise ValueError("replicas.min 0 needs gateway.hold_timeout_s > 0 (requests wait for a wake)")
        return self

    def initial_replicas(self) -> int:
        if self.replicas.initial is not None:
            return self.replicas.initial
        return self.replicas.min if self.autoscale.enabled else max(self.replicas.min, 1)

    def policy(self) -> ScalePolicy:
        a, r = self.autoscale, self.replicas
        return ScalePolicy(r.min, r.max, a.target_waiting, a.target_kv_usage, a.tolerance, a.scale_up_window_s,
                           a.scale_down_window_s, a.cooldown_s, a.max_step)


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_stack(data: Any, source: str, base_dir: Path) -> StackConfig:
    """Validate a parsed stack.yaml; a relative run_dir is taken from `base_dir`."""
    if not isinstance(data, dict):
        raise StackConfigError(f"{source}: expected a mapping at the top level")
    try:
        config = StackConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{_field_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise StackConfigError(f"{source}: invalid stack config\n  " + "\n  ".join(lines)) from None
    run_dir = config.run_dir if config.run_dir.is_absolute() else (base_dir / config.run_dir)
    model = config.model
    local = base_dir / model.path
    if not Path(model.path).is_absolute() and local.exists():  # a directory next to stack.yaml
        model = model.model_copy(update={"path": str(local.resolve())})
    return config.model_copy(update={"run_dir": run_dir.resolve(), "model": model})


def load_stack(path: str | Path) -> StackConfig:
    """Read and validate a stack.yaml."""
    path = Path(path)
    data = read_yaml(path, StackConfigError)
    return parse_stack(data, str(path), path.resolve().parent)
