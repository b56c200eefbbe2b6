"""Attention on CUDA through kvserve's own Triton kernels (see attention/triton_kernels).

Per step: store the new K/V, then run the decode kernel over the query_len == 1
sequences and the prefill kernel over the rest. Which kernels run is decided from the
metadata's host lists, so nothing waits on the GPU. In a mixed batch both kernels see the
whole batch and each skips the other's sequences on the device.
"""

from __future__ import annotations

import importlib.util

import torch

from kvserve.attention.backend import AttentionMetadata
from kvserve.attention.kv_format import KVScales


def triton_available() -> bool:
    """True where the Triton backend can run: triton importable and a CUDA device present."""
    return importlib.util.find_spec("triton") is not None and torch.cuda.is_available()


class TritonAttentionBackend:
    """Paged attention with Triton kernels: split-K GQA decode, causal varlen prefill."""

    name = "triton"

    def __init__(self, num_sms: int | None = None, kv_scales: KVScales = KVScales()):
        from kvserve.attention import triton_kernels  # needs triton: imported only when chosen

        self.kernels = triton_kernels
        if num_sms is None:
            num_sms = torch.cuda.get_device_properties().multi_processor_count if torch.cuda.is_available() else 132
        self.num_sms = num_sms  # sizes the decode split so that small batches still fill the GPU
        self.kv_scales = kv_scales

    def check_head_dim(self, head_dim: int) -> None:
        self.kernels.check_head_dim(head_dim)

    def forward(self, q, k, v, kv_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        self.kernels.store_kv(k, v, kv_cache, meta.slot_mapping, self.kv_scales)
        out = torch.empty_like(q)  # [T, num_heads, head_dim]
        num_decodes = meta.query_lens_cpu.count(1)
        mixed = 0 < num_decodes < meta.num_seqs
        if num_decodes:
            # a mixed step is dominated by its prefill: one split needs no merge kernel and
            # keeps the number of compiled variants (and first-step JIT stalls) small
            splits = 1 if mixed else self.num_splits(num_decodes, kv_cache.shape[3], meta.max_seq_len)
            self.kernels.decode_attention(
                q, kv_cache, meta.block_tables, meta.seq_lens, scale, num_splits=splits, out=out,
                query_start_loc=meta.query_start_loc if mixed else None, scales=self.kv_scales,
            )
        if num_decodes < meta.num_seqs:
            self.kernels.prefill_attention(
                q, kv_cache, meta.block_tables, meta.seq_lens, meta.query_start_loc, meta.max_query_len, scale,
                out=out, skip_decode=mixed, scales=self.kv_scales,
            )
        return out

    def decode_step(
        self,
        q: torch.Tensor,  # [B, num_heads, head_dim], one row per sequence
        k: torch.Tensor,  # [B, num_kv_heads, head_dim]
        v: torch.Tensor,  # [B, num_kv_heads, head_dim]
        kv_cache: torch.Tensor,
        slot_mapping: torch.Tensor,  # [B] int64, -1 for padding rows
        block_tables: torch.Tensor,  # [B, max_blocks] int32
        seq_lens: torch.Tensor,  # [B] int32, 0 for padding rows
        scale: float,
        num_splits: int,  # fixed per captured graph: self.num_splits(B, num_kv_heads, max_model_len)
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A decode-only step whose launches read tensors only, for CUDA-graph capture."""
        self.kernels.store_kv(k, v, kv_cache, slot_mapping, self.kv_scales)
        return self.kernels.decode_attention(q, kv_cache, block_tables, seq_lens, scale, num_splits=num_splits,
                                             out=out, scales=self.kv_scales)

    def num_splits(self, num_seqs: int, num_kv_heads: int, max_seq_len: int) -> int:
        return self.kernels.num_decode_splits(num_seqs, num_kv_heads, max_seq_len, self.num_sms)
