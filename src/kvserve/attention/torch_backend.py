"""Portable attention on plain torch (CPU and GPU): per sequence, SDPA over a prompt and two
batched matmuls for a single decode token (what a CPU at batch 1 runs most).
The reference for every faster backend. Slow for large batches, exact enough for tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kvserve.attention.backend import AttentionMetadata, write_kv
from kvserve.attention.kv_format import KVScales, is_fp8


def gather_context(kv: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Keys and values of one sequence, [2, seq_len, num_kv_heads, head_dim], from its blocks
    of kv [2, num_blocks, block_size, ...] (one gather for both)."""
    block_size = kv.shape[2]
    num_blocks = (seq_len + block_size - 1) // block_size
    blocks = block_table[:num_blocks]
    if is_fp8(kv):  # gathered as bytes: not every device has float8 indexing kernels
        return kv.view(torch.uint8)[:, blocks.long()].view(kv.dtype).flatten(1, 2)[:, :seq_len]
    return kv[:, blocks].flatten(1, 2)[:, :seq_len]


def causal_mask(query_len: int, seq_len: int, device: torch.device) -> torch.Tensor:
    """[query_len, seq_len] bool: query i (at position seq_len - query_len + i) sees keys <= it."""
    q_pos = torch.arange(seq_len - query_len, seq_len, device=device)[:, None]
    return torch.arange(seq_len, device=device)[None, :] <= q_pos


def decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """One query token's attention, [1, H, D], over keys and values [seq_len, Hkv, D]: each
    KV head's query heads as one batched matmul, in float32. SDPA's general path costs some
    80 small ops per call, which at batch 1 on a CPU is most of a layer's time."""
    heads, head_dim = q.shape[1], q.shape[2]
    kv_heads = keys.shape[1]
    qf = q.reshape(kv_heads, heads // kv_heads, head_dim).float()  # [Hkv, group, D]
    scores = torch.bmm(qf, keys.float().permute(1, 2, 0)) * scale  # [Hkv, group, seq_len]
    out = torch.bmm(scores.softmax(dim=-1), values.float().transpose(0, 1))  # [Hkv, group, D]
    return out.view(1, heads, head_dim).to(q.dtype)


def prompt_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, seq_len: int,
                     scale: float) -> torch.Tensor:
    """Several query tokens [q_len, H, D] (the last of seq_len positions) over keys and
    values [seq_len, Hkv, D], through SDPA; [q_len, H, D]."""
    q_len = q.shape[0]
    # a whole prompt is plain causal: SDPA's own path; a chunk after cached tokens needs a mask
    mask = None if q_len == seq_len else causal_mask(q_len, seq_len, q.device)
    attn = F.scaled_dot_product_attention(
        q.transpose(0, 1),  # [H, q_len, D]
        keys.transpose(0, 1),  # [Hkv, seq_len, D]: SDPA shares each among its query heads
        values.transpose(0, 1),
        attn_mask=mask,
        is_causal=mask is None,
        scale=scale,
        enable_gqa=q.shape[1] != keys.shape[1],
    )
    return attn.transpose(0, 1)


class TorchAttentionBackend:
    name = "torch"

    def __init__(self, kv_scales: KVScales = KVScales()):
        self.kv_scales = kv_scales

    def check_head_dim(self, head_dim: int) -> None:
        """Any head size: SDPA takes them all."""

    def forward(self, q, k, v, kv_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        write_kv(k, v, kv_cache, meta.slot_mapping, self.kv_scales)
        # an FP8 cache is read as stored * scale: the key scale joins the softmax scale, the
        # value scale multiplies the output (attention is linear in the values)
        k_scale, v_scale = (self.kv_scales.k, self.kv_scales.v) if is_fp8(kv_cache) else (1.0, 1.0)
        single = len(meta.query_lens_cpu) == 1 and v_scale == 1.0  # batch 1: the one result is the answer
        out = None if single else torch.empty_like(q)
        start = 0
        for i, (q_len, seq_len) in enumerate(zip(meta.query_lens_cpu, meta.seq_lens_cpu)):
            keys, values = gather_context(kv_cache, meta.block_tables[i], seq_len).to(q.dtype)
            rows = q[start:start + q_len]
            attend = (decode_attention(rows, keys, values, scale * k_scale) if q_len == 1
                      else prompt_attention(rows, keys, values, seq_len, scale * k_scale))
            if single:
                return attend
            out[start:start + q_len] = attend if v_scale == 1.0 else attend * v_scale
            start += q_len
        return out
