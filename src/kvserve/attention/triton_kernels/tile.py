"""Pieces shared by the attention kernels: paged K/V tile loads and the online softmax step.

Scores are kept in the log2 domain (scaled by softmax_scale * log2(e)) so that the kernels
use exp2, which is one instruction on NVIDIA GPUs.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kvserve.attention.kv_format import KVScales, is_fp8
LOG2E = 1.0 / math.log(2.0)


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision: exact float32 for float32 inputs (tests, greedy checks), else tensor cores."""
    return "ieee" if dtype == torch.float32 else "tf32"


def softmax_scales(kv_cache: torch.Tensor, scale: float, scales: KVScales) -> tuple[float, float]:
    """(scale_log2e, v_scale) kernel arguments: an FP8 cache's key scale multiplies every
    score, so it joins the softmax scale; its value scale multiplies the output."""
    if not is_fp8(kv_cache):
        return scale * LOG2E, 1.0
    return scale * scales.k * LOG2E, scales.v


MAX_HEAD_DIM = 256  # larger heads need tiles that do not fit shared memory at these block sizes


def check_head_dim(head_dim: int) -> None:
    if head_dim < 1 or head_dim > MAX_HEAD_DIM:
        raise ValueError(f"the Triton attention kernels take head sizes 1..{MAX_HEAD_DIM}, got {head_dim}")


def head_pad(head_dim: int) -> int:
    """The tile width of the head axis: a power of two (tl.arange) and at least 16 (tl.dot);
    features past head_dim are masked: read as zeros, never written."""
    return max(16, triton.next_power_of_2(head_dim))


@triton.jit
def head_mask(rows_ok, dims, HEAD_DIM: tl.constexpr, HEAD_PAD: tl.constexpr):
    """[R, HEAD_PAD] mask of rows_ok [R] and the real features; the same tensor as
    rows_ok[:, None] when nothing is padded, so power-of-two heads compile as before."""
    if HEAD_PAD == HEAD_DIM:
        return rows_ok[:, None]
    else:
        return rows_ok[:, None] & (dims < HEAD_DIM)[None, :]


def cache_strides(kv_cache: torch.Tensor) -> tuple[int, int, int]:
    """(block, token, head) strides of one half of a [2, num_blocks, block_size, num_kv_heads, head_dim] cache."""
    if kv_cache.stride(-1) != 1:
        raise ValueError("the KV cache's head_dim axis must be contiguous")
    return kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3)


@triton.jit
def load_kv_tile(
    cache_ptr,  # keys or values of one layer: [num_blocks, block_size, num_kv_heads, HEAD_DIM]
    block_table_ptr,  # this sequence's row of the block table
    kv_head,
    start,  # first position of the tile
    end,  # positions >= end read as zeros
    stride_block,
    stride_token,
    stride_head,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_PAD: tl.constexpr,
):
    """[BLOCK_N, HEAD_PAD] keys or values at context positions start .. start + BLOCK_N - 1
    (zeros past `end` and past HEAD_DIM)."""
    pos = start + tl.arange(0, BLOCK_N)
    valid = pos < end
    block_ids = tl.load(block_table_ptr + pos // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
    rows = block_ids * stride_block + (pos % BLOCK_SIZE) * stride_token + kv_head * stride_head
    dims = tl.arange(0, HEAD_PAD)
    mask = head_mask(valid, dims, HEAD_DIM, HEAD_PAD)
    return tl.load(cache_ptr + rows[:, None] + dims[None, :], mask=mask, other=0.0)


@triton.jit
def score_kv_tile(
    q,  # [M, HEAD_DIM] query rows
    k_cache_ptr,
    v_cache_ptr,
    block_table_ptr,
    kv_head,
    start,
    end,
    stride_block,
    stride_token,
    stride_head,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Raw scores q.k [M, BLOCK_N] and values [BLOCK_N, HEAD_PAD] (q's dtype) of positions start.. .
    An FP8 tile is converted to q's dtype in registers (exactly: E4M3 fits in 16 bits);
    its scales are applied by the caller (softmax_scales)."""
    k = load_kv_tile(k_cache_ptr, block_table_ptr, kv_head, start, end, stride_block, stride_token, stride_head,
                     BLOCK_SIZE, BLOCK_N, HEAD_DIM, HEAD_PAD)
    v = load_kv_tile(v_cache_ptr, block_table_ptr, kv_head, start, end, stride_block, stride_token, stride_head,
                     BLOCK_SIZE, BLOCK_N, HEAD_DIM, HEAD_PAD)
    scores = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision=DOT_PRECISION)
    return scores, v.to(q.dtype)


@triton.jit
def online_softmax_step(scores, values, m, l, acc, scale_log2e, DOT_PRECISION: tl.constexpr):
    """Fold one tile into the running softmax.

    scores [M, N] raw q.k (-inf where masked), values [N, D]; running max m [M] (log2
    domain: already times scale_log2e), running sum l [M], unnormalised output acc [M, D]
    (all float32). Scaling inside the exponent makes scale-and-subtract one FMA per score.
    A row that has seen only masked keys keeps m = -inf and l = 0 without producing NaN.
    """
    m_new = tl.maximum(m, tl.max(scores, 1) * scale_log2e)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m - m_safe)
    p = tl.exp2(scores * scale_log2e - m_safe[:, None])
    l = l * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(values.dtype), values, input_precision=DOT_PRECISION)
    return m_new, l, acc
