"""Paged prefill attention: a chunk of queries per sequence, causal, over the block table.

Sequence b's queries are the last query_len of its seq_len positions, so the same kernel
serves fresh prompts, prompts whose leading blocks were prefix-cache hits, and chunked
prefill continuing a partial sequence: keys are always read from the cache (the step's
own K/V are stored first), positions < seq_len - query_len being the cached prefix.

Grid (sequence, query tile, head), the query tile index reversed so that the longest
(last) tiles of a causal prompt start first. Tiles past a sequence's query_len exit at
once, so the grid needs only host ints (batch size, max_query_len). Key tiles wholly
below the tile's first query position run without a mask; only the few on the diagonal
pay for it.
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


@triton.jit
def _prefill_kernel(
    q_ptr,  # [T, num_heads, HEAD_DIM]
    k_cache_ptr,  # [num_blocks, BLOCK_SIZE, num_kv_heads, HEAD_DIM]
    v_cache_ptr,
    block_tables_ptr,  # [B, max_blocks] int32
    seq_lens_ptr,  # [B] int32
    query_start_loc_ptr,  # [B + 1] int32
    out_ptr,  # [T, num_heads, HEAD_DIM]
    scale_log2e,  # softmax scale * log2(e), times the key scale of an FP8 cache
    v_scale,  # the value scale of an FP8 cache (1.0 otherwise): attention is linear in V
    group_size,
    stride_q_tok, stride_q_head,
    stride_c_block, stride_c_tok, stride_c_head,
    stride_bt,
    stride_o_tok, stride_o_head,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_PAD: tl.constexpr,  # head_pad(HEAD_DIM): the head axis of the tiles
    SKIP_DECODE: tl.constexpr,  # leave query_len == 1 sequences to the decode kernel
    DOT_PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    tile = tl.num_programs(1) - 1 - tl.program_id(1)
    head = tl.program_id(2)
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    skip = tile * BLOCK_M >= q_len
    if SKIP_DECODE:
        skip = skip | (q_len == 1)
    if skip:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    cached_len = seq_len - q_len  # positions before this chunk
    first_pos = cached_len + tile * BLOCK_M  # position of the tile's first query

    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # query index within the chunk
    row_ok = rows < q_len
    q_pos = cached_len + rows  # [BLOCK_M] context positions
    dims = tl.arange(0, HEAD_PAD)
    q_mask = head_mask(row_ok, dims, HEAD_DIM, HEAD_PAD)
    tokens = (q_start + rows).to(tl.int64)
    q = tl.load(q_ptr + tokens[:, None] * stride_q_tok + head * stride_q_head + dims[None, :],
                mask=q_mask, other=0.0)  # [BLOCK_M, HEAD_PAD]

    kv_head = head // group_size
    table = block_tables_ptr + seq.to(tl.int64) * stride_bt
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_PAD], tl.float32)
    full_end = (first_pos + 1) // BLOCK_N * BLOCK_N  # keys below this are visible to every row
    for n in range(0, full_end, BLOCK_N):
        scores, v = score_kv_tile(q, k_cache_ptr, v_cache_ptr, table, kv_head, n, seq_len, stride_c_block,
                                  stride_c_tok, stride_c_head, BLOCK_SIZE, BLOCK_N, HEAD_DIM, HEAD_PAD, DOT_PRECISION)
        m, l, acc = online_softmax_step(scores, v, m, l, acc, scale_log2e, DOT_PRECISION)

    diag_end = tl.minimum(first_pos + BLOCK_M, seq_len)  # one past the tile's last visible key
    for n in range(full_end, diag_end, BLOCK_N):
        scores, v = score_kv_tile(q, k_cache_ptr, v_cache_ptr, table, kv_head, n, seq_len, stride_c_block,
                                  stride_c_tok, stride_c_head, BLOCK_SIZE, BLOCK_N, HEAD_DIM, HEAD_PAD, DOT_PRECISION)
        k_pos = n + tl.arange(0, BLOCK_N)
        visible = (k_pos[None, :] <= q_pos[:, None]) & (k_pos < seq_len)[None, :]
        m, l, acc = online_softmax_step(tl.where(visible, scores, float("-inf")), v, m, l, acc, scale_log2e,
                                        DOT_PRECISION)

    out = acc * (v_scale / tl.where(l > 0, l, 1.0))[:, None]
    tl.store(out_ptr + tokens[:, None] * stride_o_tok + head * stride_o_head + dims[None, :],
             out.to(out_ptr.dtype.element_ty), mask=q_mask)


def prefill_config(head_dim: int, dtype: torch.dtype) -> dict:
    """Tile sizes and launch options, from the H100 sweep in docs/gpu-kernels.md.

    16-bit: 128x128 tiles, 3 stages for head_dim 128 (165 KB of shared memory); 128x64 for
    64 (128x128 takes 1.25x as long there); 8 warps (with 4, head_dim 64 needs 246
    registers a thread). Float32 (exact "ieee"
    dots, for tests and greedy checks) runs on FMA units and spills at larger tiles.
    """
    if dtype == torch.float32:
        return dict(block_m=32, block_n=16, num_warps=4, num_stages=2)
    if head_dim > 128:  # not timed: sized to fit shared memory
        return dict(block_m=64, block_n=32, num_warps=8, num_stages=2)
    if head_dim == 128:
        return dict(block_m=128, block_n=128, num_warps=8, num_stages=3)
    return dict(block_m=128, block_n=64, num_warps=8, num_stages=3)


def prefill_attention(
    q: torch.Tensor,  # [T, num_heads, head_dim]
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim], this step's K/V stored
    block_tables: torch.Tensor,  # [B, max_blocks] int32
    seq_lens: torch.Tensor,  # [B] int32
    query_start_loc: torch.Tensor,  # [B + 1] int32
    max_query_len: int,
    scale: float,
    out: torch.Tensor | None = None,  # [T, num_heads, head_dim]
    skip_decode: bool = False,
    scales: KVScales = KVScales(),  # of an FP8 cache (read as stored * scale)
    **config,  # block_m, block_n, num_warps, num_stages: overrides of prefill_config
) -> torch.Tensor:
    """Causal attention of each sequence's query chunk over its whole context.

    With skip_decode, rows of sequences whose query_len is 1 are left untouched.
    """
    num_seqs = seq_lens.shape[0]
    num_heads, head_dim = q.shape[1:]
    num_kv_heads, block_size = kv_cache.shape[3], kv_cache.shape[2]
    check_head_dim(head_dim)
    out = torch.empty_like(q) if out is None else out
    if num_seqs == 0 or max_query_len == 0:
        return out
    cfg = {**prefill_config(head_pad(head_dim), q.dtype), **config}
    grid = (num_seqs, triton.cdiv(max_query_len, cfg["block_m"]), num_heads)
    _prefill_kernel[grid](
        q, kv_cache[0], kv_cache[1], block_tables, seq_lens, query_start_loc, out,
        *softmax_scales(kv_cache, scale, scales), num_heads // num_kv_heads,
        q.stride(0), q.stride(1), *cache_strides(kv_cache), block_tables.stride(0),
        out.stride(0), out.stride(1),
        BLOCK_SIZE=block_size, BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], HEAD_DIM=head_dim,
        HEAD_PAD=head_pad(head_dim), SKIP_DECODE=skip_decode, DOT_PRECISION=dot_precision(q.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out
