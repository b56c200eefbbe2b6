"""Triton kernels for attention over the paged KV cache.

- `store_kv`: write a step's keys and values into their cache slots (slot -1 = skip).
- `decode_attention`: one query token per sequence, split-K over the context
  (flash-decoding), one program per (sequence, KV head, split) covering the whole group
  of query heads that share the KV head. Launch takes tensors only: CUDA-graph safe.
- `prefill_attention`: a chunk of query tokens per sequence, causal, reading the whole
  context (cached prefix + this chunk) through the block table.

Head sizes 1..256: tiles are padded to a power of two and masked.
Importing this package needs triton; `TritonAttentionBackend` imports it lazily.
"""

from kvserve.attention.triton_kernels.decode import decode_attention, num_decode_splits
from kvserve.attention.triton_kernels.prefill import prefill_attention
from kvserve.attention.triton_kernels.store_kv import store_kv
from kvserve.attention.triton_kernels.tile import check_head_dim

__all__ = ["check_head_dim", "decode_attention", "num_decode_splits", "prefill_attention", "store_kv"]
