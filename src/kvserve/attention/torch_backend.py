"""Portable attention on plain torch (CPU and GPU): one SDPA call per sequence.

The reference for every faster backend. Slow for large batches, exact enough for tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kvserve.attention.backend import AttentionMetadata, write_kv
from kvserve.attention.kv_format import KVScales, is_fp8


def gather_context(kv: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Keys or values of one sequence, [seq_len, num_kv_heads, head_dim], from its blocks."""
    block_size = kv.shape[1]
    num_blocks = (seq_len + block_size - 1) // block_size
    blocks = block_table[:num_blocks].long()
    if is_fp8(kv):  # gathered as bytes: not every device has float8 indexing kernels
        return kv.view(torch.uint8)[blocks].view(kv.dtype).flatten(0, 1)[:seq_len]
    return kv[blocks].flatten(0, 1)[:seq_len]


def causal_mask(query_len: int, seq_len: int, device: torch.device) -> torch.Tensor:
    """[query_len, seq_len] bool: query i (at position seq_len - query_len + i) sees keys <= it."""
    q_pos = torch.arange(seq_len - query_len, seq_len, device=device)[:, None]
    return torch.arange(seq_len, device=device)[None, :] <= q_pos


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
        out = torch.empty_like(q)
        gqa = q.shape[1] != kv_cache.shape[-2]
        start = 0
        for i, (q_len, seq_len) in enumerate(zip(meta.query_lens_cpu, meta.seq_lens_cpu)):
            keys = gather_context(kv_cache[0], meta.block_tables[i], seq_len).to(q.dtype)
            values = gather_context(kv_cache[1], meta.block_tables[i], seq_len).to(q.dtype)
            # a single query (decode) sees every key, and a whole prompt is plain causal: SDPA's
            # own paths; only a chunk after cached tokens needs an explicit mask
            mask = None if q_len == 1 or q_len == seq_len else causal_mask(q_len, seq_len, q.device)
            attn = F.scaled_dot_product_attention(
                q[start:start + q_len].transpose(0, 1),  # [H, q_len, D]
                keys.transpose(0, 1),  # [Hkv, seq_len, D]: SDPA shares each among its query heads
                values.transpose(0, 1),
                attn_mask=mask,
                is_causal=mask is None and q_len > 1,
                scale=scale * k_scale,
                enable_gqa=gqa,
            )
            out[start:start + q_len] = attn.transpose(0, 1) if v_scale == 1.0 else attn.transpose(0, 1) * v_scale
            start += q_len
        return out
