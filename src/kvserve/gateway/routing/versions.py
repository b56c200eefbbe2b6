"""Model versions and canary splits: which version of a model serves a request."""

from __future__ import annotations

import random
from dataclasses import dataclass

from kvserve.gateway.errors import not_found
from kvserve.gateway.routing.hashring import stable_hash
from kvserve.gateway.routing.pool import Pool
from kvserve.openai_error import OpenAIError

VERSION_SEPARATOR = "@"


@dataclass
class VersionRoute:
    """One version of a model: its share of unpinned traffic and its pools."""

    model: str
    name: str
    weight: float  # relative share; the admin API may change it at runtime
    upstream_model: str  # the model name sent upstream
    pool: Pool
    long_pool: Pool | None = None  # serves prompts of at least long_threshold estimated tokens
    long_threshold: int = 0

    def pools_for(self, est_prompt_tokens: int) -> tuple[Pool, ...]:
        """Pools to try in order: the one the prompt length calls for, then the other."""
        if self.long_pool is None:
            return (self.pool,)
        if est_prompt_tokens >= self.long_threshold:
            return (self.long_pool, self.pool)
        return (self.pool, self.long_pool)

    def all_pools(self) -> tuple[Pool, ...]:
        return (self.pool,) if self.long_pool is None else (self.pool, self.long_pool)


@dataclass
class ModelRoute:
    """A client-facing model name and its versions (in config order)."""

    name: str
    versions: dict[str, VersionRoute]
    sticky: bool = True  # a user's unpinned requests always land on the same version


def split_model_name(name: str) -> tuple[str, str | None]:
    """'llama@v2' -> ('llama', 'v2'); 'llama' -> ('llama', None)."""
    model, sep, version = name.partition(VERSION_SEPARATOR)
    return (model, version) if sep else (model, None)


def choose_version(model: ModelRoute, pinned: str | None, sticky_key: str | None,
                   rng: random.Random) -> VersionRoute:
    """The pinned version if any, else a weighted draw; sticky draws hash the user so a
    user keeps its version as long as the weights do not move its point."""
    if pinned is not None:
        version = model.versions.get(pinned)
        if version is None:
            raise not_found(f"model '{model.name}' has no version '{pinned}'", "model")
        return version
    weighted = [v for v in model.versions.values() if v.weight > 0]
    total = sum(v.weight for v in weighted)
    if total <= 0:
        raise OpenAIError(503, f"no version of model '{model.name}' takes traffic (all weights are 0)", "service_unavailable", code="no_version")
    if model.sticky and sticky_key is not None:
        fraction = stable_hash(f"{model.name}\x00{sticky_key}") / 2.0**64
    else:
        fraction = rng.random()
    point = fraction * total
    for version in weighted:
        point -= version.weight
        if point < 0:
            return version
    return weighted[-1]
