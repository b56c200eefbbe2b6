"""Building blocks shared by the decoder architectures: RMSNorm, rotary embedding, gated MLP.

Parameter names follow Hugging Face (`weight`, `gate_proj`, `up_proj`, `down_proj`) so that
checkpoints load by name without a mapping table.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 and cast back (as the reference does)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))  # [hidden_size]
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def silu_and_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


class GatedMLP(nn.Module):
    """The SwiGLU feed-forward block: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_and_mul(self.gate_proj(x), self.up_proj(x)))


# ---------------------------------------------------------------------------------------
# Rotary position embedding


def rope_parameters(hf_config: Any) -> dict:
    """The rope settings as one dict with `rope_type` and `rope_theta`, from either format.

    transformers 5 writes `rope_parameters`; older checkpoints have `rope_theta` plus an
    optional `rope_scaling` dict whose type key is `type` or `rope_type`.
    """
    params = getattr(hf_config, "rope_parameters", None)
    if not params:
        params = dict(getattr(hf_config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    params = dict(params)
    params["rope_type"] = params.get("rope_type") or params.pop("type", None) or "default"
    params.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    return params


def _default_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device="cpu") / head_dim
    return 1.0 / theta**exponents  # [head_dim // 2]


def _linear_inv_freq(inv_freq: torch.Tensor, params: dict) -> torch.Tensor:
    # Dividing the frequencies by the factor is the same as dividing the positions by it.
    return inv_freq / float(params["factor"])


def _llama3_inv_freq(inv_freq: torch.Tensor, params: dict) -> torch.Tensor:
    """Llama 3.1 scaling: long wavelengths are slowed by `factor`, short ones kept, and the
    band between them is blended linearly in 1/wavelength."""
    factor = float(params["factor"])
    low, high = float(params["low_freq_factor"]), float(params["high_freq_factor"])
    original_len = float(params["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    blend = ((original_len / wavelen - low) / (high - low)).clamp(0.0, 1.0)
    scaled = (1 - blend) * inv_freq / factor + blend * inv_freq
    scaled = torch.where(wavelen < original_len / high, inv_freq, scaled)
    return torch.where(wavelen > original_len / low, inv_freq / factor, scaled)


ROPE_SCALINGS: dict[str, Callable[[torch.Tensor, dict], torch.Tensor]] = {
    "default": lambda inv_freq, params: inv_freq,
    "linear": _linear_inv_freq,
    "llama3": _llama3_inv_freq,
}


class RotaryEmbedding(nn.Module):
    """Neox-style rotary embedding (rotate the two halves of each head) with a float32 cache.

    The cos/sin table is built on the CPU even when the model is created on the meta device,
    so that a model materialised by the loader keeps a valid table; `.to(device)` moves it.
    """

    def __init__(self, head_dim: int, max_positions: int, params: dict):
        super().__init__()
        rope_type = params["rope_type"]
        if rope_type not in ROPE_SCALINGS:
            raise ValueError(
                f"unsupported rope scaling type {rope_type!r}; supported: {sorted(ROPE_SCALINGS)}"
            )
        inv_freq = ROPE_SCALINGS[rope_type](_default_inv_freq(head_dim, float(params["rope_theta"])), params)
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32, device="cpu"), inv_freq)
        cos_sin = torch.cat([angles.cos(), angles.sin()], dim=-1)  # [max_positions, head_dim]
        self.register_buffer("cos_sin", cos_sin, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for each position, each [T, head_dim // 2] float32."""
        return self.cos_sin[positions].chunk(2, dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [T, heads, head_dim] by the angles of its token (cos/sin [T, head_dim // 2])."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return rotated.to(x.dtype)
