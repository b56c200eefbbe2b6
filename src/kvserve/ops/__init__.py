"""Fused small ops for the model layers: Triton kernels on CUDA, torch references elsewhere.

Each op's module holds the kernel and its torch reference side by side; these functions
pick one by the tensor's device, so model code calls them the same way on CPU and GPU.
"""

from __future__ import annotations

import torch

from kvserve.ops._triton import HAS_TRITON
from kvserve.ops.activation import silu_and_mul_torch, silu_and_mul_triton
from kvserve.ops.norm import rms_norm_torch, rms_norm_triton
from kvserve.ops.rotary import RotaryAngles, build_cos_sin_cache, gather_angles, rotate_torch_, rotary_triton_


def use_triton(x: torch.Tensor) -> bool:
    return HAS_TRITON and x.is_cuda


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(RMSNorm(x + residual) * weight, x + residual); the second is None without a residual."""
    return (rms_norm_triton if use_triton(x) else rms_norm_torch)(x, weight, eps, residual)


def rotary_angles(cos_sin_cache: torch.Tensor, positions: torch.Tensor) -> RotaryAngles:
    """A step's rotary inputs for tokens at positions [T], made once for all layers."""
    if use_triton(cos_sin_cache):
        return RotaryAngles(positions, cos_sin_cache)  # the kernel reads the table itself
    return gather_angles(cos_sin_cache, positions)


def rotary_(q: torch.Tensor, k: torch.Tensor, angles: RotaryAngles) -> None:
    """NeoX-style rotary embedding of q [T, H, D] and k [T, Hkv, D] in place, at the step's angles."""
    if angles.cos is None:
        rotary_triton_(q, k, angles.positions, angles.cache)
    else:
        rotate_torch_(q, k, angles)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [..., 2 * inter] = gate | up  ->  silu(gate) * up [..., inter]."""
    return (silu_and_mul_triton if use_triton(x) else silu_and_mul_torch)(x)


__all__ = ["RotaryAngles", "build_cos_sin_cache", "rms_norm", "rotary_", "rotary_angles", "silu_and_mul"]
