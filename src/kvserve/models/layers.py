"""Building blocks shared by the decoder architectures: RMSNorm, merged projections, gated
MLP and rotary embedding, each calling the fused ops of kvserve.ops (Triton on CUDA, torch
references elsewhere, with the rounding of the Hugging Face layers they replace).

Projections that read the same input are merged into one matmul (q|k|v, gate|up); the
loader's stacked-parameter table maps the checkpoint's separate HF tensors onto their rows.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence, overload

import torch
from torch import nn

from kvserve import ops


class RMSNorm(nn.Module):
    """Root-mean-square norm, optionally fused with the residual add that precedes it.

    Without a residual it returns the normed tensor; with one it returns
    (norm(x + residual), x + residual), so that a decoder carries the residual stream
    between layers without a separate add kernel: `x, residual = norm(x, residual)`.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))  # [hidden_size]
        self.eps = eps

    @overload
    def forward(self, x: torch.Tensor, residual: None = None) -> torch.Tensor: ...
    @overload
    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def forward(self, x, residual=None):
        out, new_residual = ops.rms_norm(x, self.weight, self.eps, residual)
        return out if residual is None else (out, new_residual)


class MergedLinear(nn.Linear):
    """Several projections of the same input as one matmul: their weight rows (and biases)
    stacked in order, so one GEMM reads the input once. `output_sizes` gives each block's rows."""

    def __init__(self, in_features: int, output_sizes: Sequence[int], bias: bool = False):
        super().__init__(in_features, sum(output_sizes), bias=bias)
        self.output_sizes = tuple(output_sizes)


class GatedMLP(nn.Module):
    """The SwiGLU feed-forward block: down(silu(gate(x)) * up(x)), gate|up merged."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False):
        super().__init__()
        self.gate_up_proj = MergedLinear(hidden_size, [intermediate_size, intermediate_size], bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(ops.silu_and_mul(self.gate_up_proj(x)))  # via [T, 2 * intermediate]


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
    """Neox-style rotary embedding (rotate the two halves of each head) from a float32 table.

    `cos_sin` [max_positions, head_dim] (cos | sin per position, the layout of
    kvserve.ops.rotary_) is built once per model, on the CPU even when the model is created
    on the meta device, so that a model materialised by the loader keeps a valid table;
    `.to(device)` moves it. The layers rotate in place with `kvserve.ops.rotary_`.
    """

    def __init__(self, head_dim: int, max_positions: int, params: dict):
        super().__init__()
        rope_type = params["rope_type"]
        if rope_type not in ROPE_SCALINGS:
            raise ValueError(
                f"unsupported rope scaling type {rope_type!r}; supported: {sorted(ROPE_SCALINGS)}"
            )
        inv_freq = ROPE_SCALINGS[rope_type](_default_inv_freq(head_dim, float(params["rope_theta"])), params)
        self.register_buffer("cos_sin", ops.build_cos_sin_cache(inv_freq, max_positions), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for each position, each [T, head_dim // 2] float32 (for `apply_rotary`)."""
        return self.cos_sin[positions].chunk(2, dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Out-of-place reference of the rotation that `kvserve.ops.rotary_` does in place:
    x [T, heads, head_dim] rotated by the angles of its token (cos/sin [T, head_dim // 2])."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return rotated.to(x.dtype)
