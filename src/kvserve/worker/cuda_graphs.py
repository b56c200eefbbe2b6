"""CUDA graphs for decode steps: captured once per batch size of a ladder, replayed for
the smallest size that fits a step, the extra rows padded (slot -1: no KV write;
sequence length 0: no attention). Removes the per-kernel launch cost that dominates
decode of small models.
"""

from __future__ import annotations

import logging

import torch

from kvserve.attention.backend import AttentionMetadata
from kvserve.worker.input_buffers import InputBuffers

logger = logging.getLogger(__name__)


def batch_size_ladder(max_batch: int) -> list[int]:
    sizes = [1, 2, 4, 8] + list(range(16, 257, 16)) + list(range(288, 1025, 32))
    return [s for s in sizes if s <= max_batch] or [1]


class DecodeGraphs:
    def __init__(self, model, kv_caches: list[torch.Tensor], buffers: InputBuffers, max_batch: int,
                 max_model_len: int) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.buffers = buffers
        self.max_model_len = max_model_len
        self.sizes = batch_size_ladder(max_batch)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.pool = None  # the graphs' memory pool, shared with the verification graphs

    @property
    def max_batch(self) -> int:
        return self.sizes[-1]

    @torch.inference_mode()
    def capture_all(self, pool=None) -> None:
        """Capture every size into `pool` (a new memory pool if None: kept as self.pool)."""
        self._clear_inputs()
        pool = self.pool = torch.cuda.graph_pool_handle() if pool is None else pool
        for size in reversed(self.sizes):  # largest first: smaller graphs reuse its memory
            self.model(*self._args(size))  # warm-up outside the graph (Triton compiles here)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[size] = self.model(*self._args(size))
            self.graphs[size] = graph
        torch.cuda.synchronize()
        logger.info("captured %s for batch sizes %s", type(self).__name__, self.sizes)

    def _clear_inputs(self) -> None:
        """Padding in every row: the captures write and read no KV."""
        dev = self.buffers.dev
        dev["slot_mapping"].fill_(-1)
        dev["seq_lens"].zero_()
        dev["query_start_loc"].copy_(torch.arange(dev["query_start_loc"].shape[0], dtype=torch.int32))

    def _args(self, size: int):
        dev = self.buffers.dev
        meta = AttentionMetadata(
            slot_mapping=dev["slot_mapping"][:size],
            query_start_loc=dev["query_start_loc"][: size + 1],
            seq_lens=dev["seq_lens"][:size],
            block_tables=dev["block_tables"][:size],
            query_lens_cpu=[1] * size,
            seq_lens_cpu=[self.max_model_len] * size,  # sizes the split grid for any length
            max_query_len=1,
            max_seq_len=self.max_model_len,
        )
        return dev["input_ids"][:size], dev["positions"][:size], self.kv_caches, meta

    def padded_size(self, batch: int) -> int | None:
        return next((s for s in self.sizes if s >= batch), None)

    def replay(self, batch: int, size: int) -> torch.Tensor:
        """Hidden states [batch, hidden] of a decode step whose inputs are already in the
        device buffers for rows [0, batch) and padding in rows [batch, size)."""
        self.graphs[size].replay()
        return self.outputs[size][:batch]
