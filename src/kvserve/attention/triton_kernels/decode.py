"""Paged decode attention: one query token per sequence, split-K over the context.

Grid (sequence, KV head, split). A program loads the GROUP query heads that share its KV
head as the rows of one tile (padded to 16 for tl.dot), so each key and value is read
from HBM once per group rather than once per query head. A long context is cut into
`num_splits` contiguous ranges processed in parallel (flash-decoding); a second kernel
merges the partial results by their log-sum-exp. With one split the first kernel writes
the output directly.

Padded rows (CUDA graphs) need nothing special: a sequence with seq_len 0 gets zeros.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvserve.attention.kv_format import KVScales
from kvserve.attention.triton_kernels.tile import (
    cache_strides,
    check_head_dim,
    softmax_scales,
    dot_precision,
    head_mask,
    head_pad,
    online_softmax_step,
    score_kv_tile,
)

MIN_TOKENS_PER_SPLIT = 256  # below this, a split's fixed cost outweighs its parallelism
PROGRAMS_PER_SM = 4  # H100 sweep: ~512 programs in flight beat both 256 and 1024
MAX_SPLITS = 64


@triton.jit
def _decode_split_kernel(
    q_ptr,  # [T, num_heads, HEAD_DIM]
    k_cache_ptr,  # [num_blocks, BLOCK_SIZE, num_kv_heads, HEAD_DIM]
    v_cache_ptr,
    block_tables_ptr,  # [B, max_blocks] int32
    seq_lens_ptr,  # [B] int32
    query_start_loc_ptr,  # [B + 1] int32, read only when MIXED
    out_ptr,  # [T, num_heads, HEAD_DIM], written when DIRECT
    part_out_ptr,  # [B, num_heads, num_splits, HEAD_PAD] float32, contiguous, written unless DIRECT
    part_lse_ptr,  # [B, num_heads, num_splits] float32, contiguous (log2 domain)
    scale_log2e,  # softmax scale * log2(e), times the key scale of an FP8 cache
    v_scale,  # the value scale of an FP8 cache (1.0 otherwise): attention is linear in V
    num_heads,
    group_size,
    num_splits,
    stride_q_tok, stride_q_head,
    stride_c_block, stride_c_tok, stride_c_head,
    stride_bt,
    stride_o_tok, stride_o_head,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_PAD: tl.constexpr,  # head_pad(HEAD_DIM): the head axis of the tiles
    GROUP_PAD: tl.constexpr,
    MIXED: tl.constexpr,  # batch also holds prefill chunks: find rows via query_start_loc, skip non-decodes
    DIRECT: tl.constexpr,  # num_splits == 1: normalise and write out_ptr
    DOT_PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    row = seq
    if MIXED:
        row = tl.load(query_start_loc_ptr + seq)
        if tl.load(query_start_loc_ptr + seq + 1) - row != 1:
            return
    seq_len = tl.load(seq_lens_ptr + seq)
    per_split = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, seq_len)

    g = tl.arange(0, GROUP_PAD)
    heads = kv_head * group_size + g
    head_ok = g < group_size
    dims = tl.arange(0, HEAD_PAD)
    mask = head_mask(head_ok, dims, HEAD_DIM, HEAD_PAD)
    q_rows = q_ptr + row.to(tl.int64) * stride_q_tok + heads[:, None] * stride_q_head
    q = tl.load(q_rows + dims[None, :], mask=mask, other=0.0)  # [GROUP_PAD, HEAD_PAD]

    m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_PAD], tl.float32)
    table = block_tables_ptr + seq.to(tl.int64) * stride_bt
    for n in range(start, end, BLOCK_N):
        scores, v = score_kv_tile(q, k_cache_ptr, v_cache_ptr, table, kv_head, n, end, stride_c_block, stride_c_tok,
                                  stride_c_head, BLOCK_SIZE, BLOCK_N, HEAD_DIM, HEAD_PAD, DOT_PRECISION)
        scores = tl.where((n + tl.arange(0, BLOCK_N))[None, :] < end, scores, float("-inf"))
        m, l, acc = online_softmax_step(scores, v, m, l, acc, scale_log2e, DOT_PRECISION)

    out = acc * (v_scale / tl.where(l > 0, l, 1.0))[:, None]  # empty range (seq_len 0, trailing split): zeros
    if DIRECT:
        o_rows = out_ptr + row.to(tl.int64) * stride_o_tok + heads[:, None] * stride_o_head
        tl.store(o_rows + dims[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        part = (seq.to(tl.int64) * num_heads + heads) * num_splits + split  # [GROUP_PAD]
        tl.store(part_out_ptr + part[:, None] * HEAD_PAD + dims[None, :], out, mask=head_ok[:, None])
        lse = tl.where(l > 0, m + tl.log2(tl.where(l > 0, l, 1.0)), float("-inf"))
        tl.store(part_lse_ptr + part, lse, mask=head_ok)


@triton.jit
def _decode_merge_kernel(
    part_out_ptr,  # [B, num_heads, num_splits, HEAD_PAD] float32, contiguous
    part_lse_ptr,  # [B, num_heads, num_splits] float32, contiguous
    query_start_loc_ptr,  # [B + 1] int32, read only when MIXED
    out_ptr,  # [T, num_heads, HEAD_DIM]
    num_heads,
    num_splits,
    stride_o_tok, stride_o_head,
    HEAD_DIM: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    SPLITS_PAD: tl.constexpr,
    MIXED: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    row = seq
    if MIXED:
        row = tl.load(query_start_loc_ptr + seq)
        if tl.load(query_start_loc_ptr + seq + 1) - row != 1:
            return
    splits = tl.arange(0, SPLITS_PAD)
    split_ok = splits < num_splits
    base = (seq.to(tl.int64) * num_heads + head) * num_splits
    lse = tl.load(part_lse_ptr + base + splits, mask=split_ok, other=float("-inf"))
    m = tl.max(lse, 0)
    weights = tl.exp2(lse - tl.where(m == float("-inf"), 0.0, m))  # [SPLITS_PAD], 0 for empty splits
    dims = tl.arange(0, HEAD_PAD)
    parts = tl.load(part_out_ptr + (base + splits)[:, None] * HEAD_PAD + dims[None, :], mask=split_ok[:, None],
                    other=0.0)
    total = tl.sum(weights, 0)
    out = tl.sum(parts * weights[:, None], 0) / tl.where(total > 0, total, 1.0)
    o_ptr = out_ptr + row.to(tl.int64) * stride_o_tok + head * stride_o_head + dims
    if HEAD_PAD == HEAD_DIM:
        tl.store(o_ptr, out.to(out_ptr.dtype.element_ty))
    else:
        tl.store(o_ptr, out.to(out_ptr.dtype.element_ty), mask=dims < HEAD_DIM)


def num_decode_splits(num_seqs: int, num_kv_heads: int, max_seq_len: int, num_sms: int = 132) -> int:
    """Splits per sequence: about PROGRAMS_PER_SM programs per SM, each split >= MIN_TOKENS_PER_SPLIT.

    A power of two (rounded down), so that few merge-kernel variants get compiled. For CUDA
    graphs, call it with the captured batch size and the longest context the graph serves.
    """
    wanted = PROGRAMS_PER_SM * num_sms // max(num_seqs * num_kv_heads, 1)
    useful = triton.cdiv(max(max_seq_len, 1), MIN_TOKENS_PER_SPLIT)
    splits = max(min(wanted, useful, MAX_SPLITS), 1)
    return 1 << (splits.bit_length() - 1)


def decode_attention(
    q: torch.Tensor,  # [T, num_heads, head_dim]; row b is sequence b unless query_start_loc is given
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim]
    block_tables: torch.Tensor,  # [B, max_blocks] int32
    seq_lens: torch.Tensor,  # [B] int32, 0 = padding row (output zeros)
    scale: float,
    num_splits: int = 1,
    out: torch.Tensor | None = None,  # [T, num_heads, head_dim]
    query_start_loc: torch.Tensor | None = None,  # [B + 1] int32: mixed batch, only query_len == 1 rows
    scales: KVScales = KVScales(),  # of an FP8 cache (read as stored * scale)
    block_n: int = 64,
    num_warps: int = 4,
    num_stages: int = 3,
) -> torch.Tensor:
    """Attention of each sequence's single new query over its whole cached context.

    Without query_start_loc, q has one row per sequence (T == B) and the launch reads no
    host data: safe to capture in a CUDA graph. With it, rows of sequences whose query
    length is not 1 are left untouched (prefill_attention fills them).
    """
    num_seqs = seq_lens.shape[0]
    num_heads, head_dim = q.shape[1:]
    num_kv_heads, block_size = kv_cache.shape[3], kv_cache.shape[2]
    check_head_dim(head_dim)
    out = torch.empty_like(q) if out is None else out
    if num_seqs == 0:
        return out
    group = num_heads // num_kv_heads
    direct = num_splits == 1
    pad = head_pad(head_dim)
    part_out = q.new_empty((num_seqs, num_heads, num_splits, pad), dtype=torch.float32)
    part_lse = q.new_empty((num_seqs, num_heads, num_splits), dtype=torch.float32)
    mixed = query_start_loc is not None
    qsl = query_start_loc if mixed else seq_lens
    _decode_split_kernel[(num_seqs, num_kv_heads, num_splits)](
        q, kv_cache[0], kv_cache[1], block_tables, seq_lens, qsl, out, part_out, part_lse,
        *softmax_scales(kv_cache, scale, scales), num_heads, group, num_splits,
        q.stride(0), q.stride(1), *cache_strides(kv_cache), block_tables.stride(0),
        out.stride(0), out.stride(1),
        BLOCK_SIZE=block_size, BLOCK_N=block_n, HEAD_DIM=head_dim, HEAD_PAD=pad,
        GROUP_PAD=max(16, triton.next_power_of_2(group)), MIXED=mixed, DIRECT=direct,
        DOT_PRECISION=dot_precision(q.dtype), num_warps=num_warps, num_stages=num_stages,
    )
    if not direct:
        _decode_merge_kernel[(num_seqs, num_heads)](
            part_out, part_lse, qsl, out, num_heads, num_splits, out.stride(0), out.stride(1),
            HEAD_DIM=head_dim, HEAD_PAD=pad, SPLITS_PAD=triton.next_power_of_2(num_splits), MIXED=mixed, num_warps=4,
        )
    return out
