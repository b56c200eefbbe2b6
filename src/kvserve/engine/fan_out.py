"""n > 1: one engine request per completion. The copies share the prompt's KV blocks
through the prefix cache (blocks are cached when scheduled, so even copies admitted in
the same step share them)."""

from __future__ import annotations

from kvserve.sampling_params import SamplingParams


def child_id(request_id: str, index: int) -> str:
    return f"{request_id}-{index}"


def fan_out(request_id: str, params: SamplingParams) -> list[tuple[str, SamplingParams]]:
    """(engine request id, params) per completion; seeded copies get seed, seed+1, ..."""
    if params.n == 1:
        return [(request_id, params)]
    children = []
    for i in range(params.n):
        seed = None if params.seed is None else params.seed + i
        children.append((child_id(request_id, i), params.clone(n=1, seed=seed)))
    return children
