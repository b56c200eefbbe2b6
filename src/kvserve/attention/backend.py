"""The attention backend interface: what every backend reads and how it is called.

A KV cache for one layer is a tensor [2, num_blocks, block_size, num_kv_heads, head_dim]
(index 0 = keys, 1 = values), in the model's dtype or in FP8 with the backend's
`kv_scales` (see kv_format). A step's tokens are packed: sequence i owns query rows
query_start_loc[i]:query_start_loc[i+1], the last of its seq_lens[i] positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from kvserve.attention.kv_format import KVScales, is_fp8, quantize_fp8


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [T] int64: cache slot (block_id * block_size + offset) per token
    query_start_loc: torch.Tensor  # [B + 1] int32: cumulative query lengths
    seq_lens: torch.Tensor  # [B] int32: context length of each sequence after this step
    block_tables: torch.Tensor  # [B, max_blocks] int32: block ids, padded with 0
    query_lens_cpu: list[int]  # host copies, so that host-side loops need no sync
    seq_lens_cpu: list[int]
    max_query_len: int
    max_seq_len: int

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens_cpu)


class AttentionBackend(Protocol):
    """Writes this step's K/V into the cache, then attends over each sequence's context."""

    name: str
    kv_scales: KVScales  # how an FP8 cache's values are scaled (unused for other caches)

    def check_head_dim(self, head_dim: int) -> None:
        """Raise ValueError, naming the value and the sizes supported, for heads it cannot take."""
        ...

    def forward(
        self,
        q: torch.Tensor,  # [T, num_heads, head_dim]
        k: torch.Tensor,  # [T, num_kv_heads, head_dim]
        v: torch.Tensor,  # [T, num_kv_heads, head_dim]
        kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim]
        meta: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:  # [T, num_heads, head_dim]
        ...


def write_kv(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor,
             scales: KVScales = KVScales()) -> None:
    """Store new keys and values into their slots (reference version, any device)."""
    num_kv_heads, head_dim = kv_cache.shape[-2:]
    if is_fp8(kv_cache):  # index_copy_ has no float8 kernel on the CPU: copy the bytes
        k, v = quantize_fp8(k, scales.k).view(torch.uint8), quantize_fp8(v, scales.v).view(torch.uint8)
        kv_cache = kv_cache.view(torch.uint8)
    kv_cache[0].view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, k.to(kv_cache.dtype))
    kv_cache[1].view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, v.to(kv_cache.dtype))
