"""Write a step's keys and values into their paged-cache slots (quantized for an FP8 cache)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvserve.attention.kv_format import FP8_MAX, KVScales, is_fp8
from kvserve.attention.triton_kernels.tile import cache_strides, head_mask, head_pad

_FP8_MAX = tl.constexpr(FP8_MAX)


@triton.jit
def _store_kv_kernel(
    k_ptr,  # [T, num_kv_heads, HEAD_DIM]
    v_ptr,  # [T, num_kv_heads, HEAD_DIM]
    k_cache_ptr,  # [num_blocks, BLOCK_SIZE, num_kv_heads, HEAD_DIM]
    v_cache_ptr,
    slot_mapping_ptr,  # [T] int64, -1 = padding token, not stored
    num_kv_heads,
    k_inv_scale,  # FP8: stored = k * k_inv_scale, saturated
    v_inv_scale,
    stride_k_tok,
    stride_k_head,
    stride_v_tok,
    stride_v_head,
    stride_c_block,
    stride_c_tok,
    stride_c_head,
    BLOCK_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_PAD: tl.constexpr,  # head_pad(HEAD_DIM)
    HEADS_PAD: tl.constexpr,
    FP8: tl.constexpr,  # the cache is float8_e4m3fn
):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot < 0:
        return
    heads = tl.arange(0, HEADS_PAD)
    dims = tl.arange(0, HEAD_PAD)
    mask = head_mask(heads < num_kv_heads, dims, HEAD_DIM, HEAD_PAD)
    dst = (slot // BLOCK_SIZE) * stride_c_block + (slot % BLOCK_SIZE) * stride_c_tok
    dst = dst + heads[:, None] * stride_c_head + dims[None, :]
    k = tl.load(k_ptr + token * stride_k_tok + heads[:, None] * stride_k_head + dims[None, :], mask=mask)
    v = tl.load(v_ptr + token * stride_v_tok + heads[:, None] * stride_v_head + dims[None, :], mask=mask)
    if FP8:
        k = tl.minimum(tl.maximum(k.to(tl.float32) * k_inv_scale, -_FP8_MAX), _FP8_MAX)
        v = tl.minimum(tl.maximum(v.to(tl.float32) * v_inv_scale, -_FP8_MAX), _FP8_MAX)
    tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def store_kv(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor,
             scales: KVScales = KVScales()) -> None:
    """kv_cache[0/1] at slot_mapping[t] := k[t] / v[t]; tokens whose slot is -1 are skipped.
    An FP8 cache gets k[t] / scales.k and v[t] / scales.v, rounded to nearest, saturated.

    k, v: [T, num_kv_heads, head_dim] (any token/head strides, contiguous head_dim);
    kv_cache: [2, num_blocks, block_size, num_kv_heads, head_dim]; slot_mapping: [T] int.
    """
    num_tokens, num_kv_heads, head_dim = k.shape
    if num_tokens == 0:
        return
    if k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("store_kv needs a contiguous head_dim axis in k and v")
    block_size = kv_cache.shape[2]
    _store_kv_kernel[(num_tokens,)](
        k, v, kv_cache[0], kv_cache[1], slot_mapping, num_kv_heads, 1.0 / scales.k, 1.0 / scales.v,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1), *cache_strides(kv_cache),
        BLOCK_SIZE=block_size, HEAD_DIM=head_dim, HEAD_PAD=head_pad(head_dim), HEADS_PAD=triton.next_power_of_2(num_kv_heads),
        FP8=is_fp8(kv_cache),
        num_warps=4 if num_kv_heads * head_dim >= 1024 else 1,
    )
