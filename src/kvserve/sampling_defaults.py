"""The sampling values a request falls back on when it leaves them out.

With `generation_config="auto"` (the default, as vLLM's `--generation-config auto`) they
are the model's own recommendation: the sampling keys of its `generation_config.json`.
The embedded default model has its own (see kvserve.default_model). With "none" a
request that gives nothing samples with SamplingParams' neutral values (temperature 1).
A value the request gives always wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvserve.config import ConfigError
from kvserve.sampling_params import SamplingParams

# generation_config.json key -> its type (the SamplingParams field has the same name)
GENERATION_CONFIG_KEYS: dict[str, type] = {
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "min_p": float,
    "repetition_penalty": float,
}


@dataclass(frozen=True)
class SamplingDefaults:
    """SamplingParams field -> value, and where the values come from (for the start-up log)."""

    values: dict[str, Any] = field(default_factory=dict)
    source: str = "none"

    def describe(self) -> str:
        if not self.values:
            return f"sampling defaults: none ({self.source}); a request without temperature samples at 1.0"
        pairs = " ".join(f"{name}={value:g}" for name, value in self.values.items())
        return f"sampling defaults: {pairs} (from {self.source}); a request's own values win"

    def params(self, **overrides: Any) -> SamplingParams:
        """SamplingParams with these defaults under `overrides`."""
        return SamplingParams(**{**self.values, **overrides})


def load_sampling_defaults(model_dir: str | Path | None, mode: str = "auto") -> SamplingDefaults:
    """The defaults for the model in `model_dir` (None: the embedded default model)."""
    if mode == "none":
        return SamplingDefaults(source="--generation-config none")
    if model_dir is None:
        from kvserve.default_model import SAMPLING_DEFAULTS

        return SamplingDefaults(dict(SAMPLING_DEFAULTS), "the embedded model's defaults")
    path = Path(model_dir) / "generation_config.json"
    if not path.exists():
        return SamplingDefaults(source=f"no generation_config.json in {model_dir}")
    values = _sampling_keys(path)
    return SamplingDefaults(values, str(path) if values else f"no sampling values in {path}")


def _sampling_keys(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    values = {}
    for key, kind in GENERATION_CONFIG_KEYS.items():
        value = raw.get(key) if isinstance(raw, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[key] = kind(value)
    try:
        SamplingParams(**values)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc} (use --generation-config none to ignore the file)") from None
    return values
