"""Rotary position embedding, NeoX style (rotate_half), applied in place to q and k.

The angles come from a [max_positions, rotary_dim] float32 table, cos in the first half
of each row and sin in the second, built once per model by `build_cos_sin_cache` from the
architecture's inv_freq (which carries any rope scaling, e.g. Llama 3's). Only the first
rotary_dim features of each head rotate; the rest (partial rotary) are left as they are.
The rotation is computed in float32 and rounded once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvserve.ops._triton import tl, triton


def build_cos_sin_cache(inv_freq: torch.Tensor, max_positions: int, attention_scaling: float = 1.0) -> torch.Tensor:
    """[max_positions, 2 * len(inv_freq)] float32: cos(p * inv_freq) | sin(p * inv_freq), times the scaling."""
    positions = torch.arange(max_positions, dtype=torch.float32, device=inv_freq.device)
    freqs = torch.outer(positions, inv_freq.float())  # [max_positions, rotary_dim / 2]
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1) * attention_scaling


@dataclass(frozen=True)
class RotaryAngles:
    """One step's rotary inputs, made once and shared by every layer: the positions and
    the model's table (what the kernel reads), and on the torch path each token's angles
    gathered from the table, laid out for a whole-head multiply: cos | cos and -sin | sin,
    [T, 1, rotary_dim] float32 (None where the kernel runs)."""

    positions: torch.Tensor  # [T] int
    cache: torch.Tensor  # [max_positions, rotary_dim] float32
    cos: torch.Tensor | None = None
    sin: torch.Tensor | None = None


def gather_angles(cos_sin_cache: torch.Tensor, positions: torch.Tensor) -> RotaryAngles:
    """The torch path's angles for tokens at `positions` (one gather and two concatenations)."""
    cos, sin = cos_sin_cache[positions].float().chunk(2, dim=-1)  # [T, half] each
    return RotaryAngles(positions, cos_sin_cache, torch.cat([cos, cos], dim=-1)[:, None],
                        torch.cat([-sin, sin], dim=-1)[:, None])


def _heads_together(q: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
    """[q and k as one [T, Hq + Hk, D] view] when k's heads follow q's in memory (the fused
    qkv output), so that one set of ops rotates both; else [q, k]."""
    follows = k.data_ptr() == q.data_ptr() + q.shape[1] * q.stride(1) * q.element_size()
    if q.dtype == k.dtype and q.stride() == k.stride() and q.shape[0::2] == k.shape[0::2] and follows:
        return [q.as_strided((q.shape[0], q.shape[1] + k.shape[1], q.shape[2]), q.stride())]
    return [q, k]


def rotate_torch_(q: torch.Tensor, k: torch.Tensor, angles: RotaryAngles) -> None:
    """Rotate q [T, H, D] and k [T, Hkv, D] in place by gathered angles: x * (cos|cos) +
    (x2|x1) * (-sin|sin), the products and sum in float32 (the same roundings as
    x1 * cos - x2 * sin | x2 * cos + x1 * sin), rounded once to the heads' dtype."""
    rotary_dim = angles.cos.shape[-1]
    for heads in _heads_together(q, k):
        rot = heads[..., :rotary_dim]
        xf = rot.float()
        swapped = xf.unflatten(-1, (2, rotary_dim // 2)).flip(-2).flatten(-2)  # x2 | x1
        rot.copy_(xf * angles.cos + swapped * angles.sin)


def rotary_torch_(
    q: torch.Tensor,  # [T, num_heads, head_dim]
    k: torch.Tensor,  # [T, num_kv_heads, head_dim]
    positions: torch.Tensor,  # [T] int
    cos_sin_cache: torch.Tensor,  # [max_positions, rotary_dim] float32
) -> None:
    """Reference: rotate q and k in place."""
    rotate_torch_(q, k, gather_angles(cos_sin_cache, positions))


@triton.jit
def _rotate_heads(x_ptr, num_heads, stride_head, cos, sin, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
                  HEADS_PAD: tl.constexpr):
    """Rotate the first 2 * HALF features of num_heads heads of one token, in place."""
    heads = tl.arange(0, HEADS_PAD)
    dims = tl.arange(0, HALF_PAD)
    mask = (heads < num_heads)[:, None] & (dims < HALF)[None, :]
    ptr1 = x_ptr + heads[:, None] * stride_head + dims[None, :]
    x1 = tl.load(ptr1, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(ptr1 + HALF, mask=mask, other=0.0).to(tl.float32)
    tl.store(ptr1, (x1 * cos - x2 * sin).to(x_ptr.dtype.element_ty), mask=mask)
    tl.store(ptr1 + HALF, (x2 * cos + x1 * sin).to(x_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rotary_kernel(
    q_ptr,  # [T, num_q_heads, head_dim]
    k_ptr,  # [T, num_k_heads, head_dim]
    positions_ptr,  # [T]
    cos_sin_ptr,  # [max_positions, 2 * HALF] float32, contiguous
    num_q_heads, num_k_heads,
    stride_q_tok, stride_q_head, stride_k_tok, stride_k_head,
    HALF: tl.constexpr,
    HALF_PAD: tl.constexpr,
    Q_HEADS_PAD: tl.constexpr,
    K_HEADS_PAD: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(positions_ptr + token).to(tl.int64)
    dims = tl.arange(0, HALF_PAD)
    angle_ptr = cos_sin_ptr + pos * 2 * HALF + dims
    cos = tl.load(angle_ptr, mask=dims < HALF, other=0.0)[None, :]
    sin = tl.load(angle_ptr + HALF, mask=dims < HALF, other=0.0)[None, :]
    _rotate_heads(q_ptr + token * stride_q_tok, num_q_heads, stride_q_head, cos, sin, HALF, HALF_PAD, Q_HEADS_PAD)
    _rotate_heads(k_ptr + token * stride_k_tok, num_k_heads, stride_k_head, cos, sin, HALF, HALF_PAD, K_HEADS_PAD)


def rotary_triton_(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor) -> None:
    """Same contract as rotary_torch_; q and k may be strided views (of a fused qkv output)."""
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        raise ValueError("rotary needs a contiguous head_dim axis in q and k")
    num_tokens, num_q_heads, _ = q.shape
    half = cos_sin_cache.shape[-1] // 2
    if num_tokens == 0:
        return
    _rotary_kernel[(num_tokens,)](
        q, k, positions, cos_sin_cache.contiguous(), num_q_heads, k.shape[1],
        q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        HALF=half, HALF_PAD=triton.next_power_of_2(half),
        Q_HEADS_PAD=triton.next_power_of_2(num_q_heads), K_HEADS_PAD=triton.next_power_of_2(k.shape[1]),
        num_warps=4,
    )
