"""ModelsConfig: the models one `kvserve serve` process serves, from the `models:` list of
its `--config` YAML (or the single `--model`), validated when built.

    models:
      - {name: chat, model: "chat:v3", pinned: true}
      - {name: coder, model: "coder@stable"}
      - {name: local, model: /srv/models/tiny, version: "2026-11-30"}
    memory_budget_gib: 12
    idle_unload_s: 600
    load_timeout_s: 120
    registry: /srv/registry

Every other key of the file is an engine or server setting shared by every model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from kvserve.config import ConfigError

NAME = re.compile(r"^\S{1,256}$")  # what clients send as "model"
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")  # goes into a response header
POOL_KEYS = ("models", "memory_budget_gib", "idle_unload_s", "load_timeout_s", "registry")


@dataclass(frozen=True)
class ModelSpec:
    """One served model."""

    name: str  # what clients send as "model"
    model: str | None  # NAME:VERSION or NAME@TAG in the registry, or a model directory; None = the embedded model
    pinned: bool = False  # loaded at start, never evicted nor unloaded when idle
    preload: bool = False  # loaded at start (an unpinned one may be evicted later)
    memory_gib: float | None = None  # memory it takes when loaded; None = its weights' size + kv_cache_gib
    version: str | None = None  # the version a directory model reports; None = "local" (registry refs name theirs)
    load_timeout_s: float | None = None  # how long a request waits for this model to load; None = the file's

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME.match(self.name):
            raise ConfigError(f"model name {self.name!r} must be 1-256 characters without spaces")
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ConfigError(f"model {self.name}: `model` must be a registry reference or a directory")
        for flag in ("pinned", "preload"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"model {self.name}: `{flag}` must be true or false")
        if self.memory_gib is not None and (not _number(self.memory_gib) or self.memory_gib <= 0):
            raise ConfigError(f"model {self.name}: memory_gib must be a positive number, got {self.memory_gib!r}")
        if self.load_timeout_s is not None and (not _number(self.load_timeout_s) or self.load_timeout_s <= 0):
            raise ConfigError(f"model {self.name}: load_timeout_s must be a positive number, got {self.load_timeout_s!r}")
        if self.version is not None and (not isinstance(self.version, str) or not VERSION.match(self.version)):
            raise ConfigError(f"model {self.name}: version must be 1-128 letters, digits or ._:/@-")

    @property
    def loads_at_start(self) -> bool:
        return self.pinned or self.preload


@dataclass(frozen=True)
class ModelsConfig:
    """The served models (the first answers requests that name none) and the pool's limits."""

    models: tuple[ModelSpec, ...]  # at least one, names unique
    memory_budget_gib: float | None = None  # memory all loaded models may take together; None = no limit
    idle_unload_s: float | None = None  # unload an unpinned model unused this long; None = never
    load_timeout_s: float = 120.0  # how long a request waits for its model to load (503 + Retry-After after)
    registry: str | None = None  # registry for NAME:VERSION refs (dir, file:// or s3://); None = the default one

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("`models` must list at least one model")
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"model names must be unique; repeated: {', '.join(dupes)}")
        for key in ("memory_budget_gib", "idle_unload_s"):
            value = getattr(self, key)
            if value is not None and (not _number(value) or value <= 0):
                raise ConfigError(f"{key} must be a positive number, got {value!r}")
        if not _number(self.load_timeout_s) or self.load_timeout_s <= 0:
            raise ConfigError(f"load_timeout_s must be a positive number, got {self.load_timeout_s!r}")
        if self.registry is not None and not isinstance(self.registry, str):
            raise ConfigError("registry must be a string (a directory, file:// or s3:// URL)")

    @property
    def default_name(self) -> str:
        return self.models[0].name

    def budget_bytes(self) -> int:
        return 2**62 if self.memory_budget_gib is None else int(self.memory_budget_gib * 2**30)

    @classmethod
    def from_file_values(cls, values: dict[str, Any]) -> ModelsConfig:
        """From the pool keys of a config file (POOL_KEYS); ConfigError names what is wrong."""
        raw = values.get("models")
        if not isinstance(raw, list):
            raise ConfigError("`models` must be a list of {name, model, pinned, preload, memory_gib, version, "
                              "load_timeout_s}")
        specs = tuple(_spec(i, item) for i, item in enumerate(raw))
        rest = {k: values[k] for k in POOL_KEYS[1:] if k in values}
        return cls(specs, **rest)


def _spec(index: int, item: Any) -> ModelSpec:
    if not isinstance(item, dict):
        raise ConfigError(f"models[{index}] must be a mapping with at least `name` and `model`")
    known = {f.name for f in fields(ModelSpec)}
    values = {str(k).replace("-", "_"): v for k, v in item.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"models[{index}]: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    missing = [k for k in ("name", "model") if k not in values]
    if missing:
        raise ConfigError(f"models[{index}]: missing {', '.join(missing)}")
    return ModelSpec(**values)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
