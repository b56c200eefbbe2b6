"""Fused small ops for the model layers: Triton kernels on CUDA, torch references elsewhere.

Each op's module holds the kernel and its torch reference side by side; these functions
pick one by the tensor's device, so model code calls them the same way on CPU and GPU.
"""

from __future__ import annotations

import torch

from kvserve.ops._triton import HAS_TRITON
from kvserve.ops.activation import silu_and_mul_torch, silu_and_mul_triton
from kvserve.ops.norm import rms_norm_torch, rms_norm_triton
from kvserve.ops.rotary import build_cos_sin_cache, rotary_torch_, rotary_triton_


def use_triton(x: torch.Tensor) -> bool:
    return HAS_TRITON and x.is_cuda


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(RMSNorm(x + residual) * weight, x + residual); the second is None without a residual."""
    return (rms_norm_triton if use_triton(x) else rms_norm_torch)(x, weight, eps, residual)


def rotary_(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor) -> None:
    """NeoX-style rotary embedding of q [T, H, D] and k [T, Hkv, D] in place, at positions [T]."""
    (rotary_triton_ if use_triton(q) else rotary_torch_)(q, k, positions, cos_sin_cache)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [..., 2 * inter] = gate | up  ->  silu(gate) * up [..., inter]."""
    return (silu_and_mul_triton if use_triton(x) else silu_and_mul_torch)(x)


__all__ = ["build_cos_sin_cache", "rms_norm", "rotary_", "silu_and_mul"]
