"""Portable attention on plain torch (CPU and GPU): one SDPA call per sequence.

The reference for every faster backend. Slow for large batches, exact enough for tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kvserve.attention.backend import AttentionMetadata, write_kv


def gather_context(kv: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Keys and values of one sequence, [2, seq_len, num_kv_heads, head_dim], from its blocks
    of kv [2, num_blocks, block_size, ...] (one gather for both)."""
    block_size = kv.shape[2]
    num_blocks = (seq_len + block_size - 1) // block_size
    return kv[:, block_table[:num_blocks]].flatten(1, 2)[:, :seq_len]


def causal_mask(query_len: int, seq_len: int, device: torch.device) -> torch.Tensor:
    """[query_len, seq_len] bool: query i (at position seq_len - query_len + i) sees keys <= it."""
    q_pos = torch.arange(seq_len - query_len, seq_len, device=device)[:, None]
    return torch.arange(seq_len, device=device)[None, :] <= q_pos


class TorchAttentionBackend:
    name = "torch"

    def check_head_dim(self, head_dim: int) -> None:
        """Any head size: SDPA takes them all."""

    def forward(self, q, k, v, kv_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        write_kv(k, v, kv_cache, meta.slot_mapping)
        single = len(meta.query_lens_cpu) == 1  # batch 1: SDPA's output is the answer, no copy
        out = None if single else torch.empty_like(q)
        gqa = q.shape[1] != kv_cache.shape[-2]
        start = 0
        for i, (q_len, seq_len) in enumerate(zip(meta.query_lens_cpu, meta.seq_lens_cpu)):
            keys, values = gather_context(kv_cache, meta.block_tables[i], seq_len).to(q.dtype)
            # a single query (decode) sees every key, and a whole prompt is plain causal: SDPA's
            # own paths; only a chunk after cached tokens needs an explicit mask
            mask = None if q_len == 1 or q_len == seq_len else causal_mask(q_len, seq_len, q.device)
            attn = F.scaled_dot_product_attention(
                q[start:start + q_len].transpose(0, 1),  # [H, q_len, D]
                keys.transpose(0, 1),  # [Hkv, seq_len, D]: SDPA shares each among its query heads
                values.transpose(0, 1),
                attn_mask=mask,
                is_causal=mask is None and q_len > 1,
                scale=scale,
                enable_gqa=gqa,
            )
            if single:
                return attn.transpose(0, 1)
            out[start:start + q_len] = attn.transpose(0, 1)
            start += q_len
        return out
