"""CUDA graphs for decode steps: captured once per batch size of a ladder, replayed for
the smallest size that fits a step, the extra rows padded (slot -1: no KV write;
sequence length 0: no attention). Removes the per-kernel launch cost that dominates
decode of small models.

Graphs of at most `logits_rows` rows also hold the LM head and the greedy argmax, so a
small greedy decode step is one replay and one copy of ids to the host (their logits,
rows x vocabulary float32, stay in the graphs' memory: small batches only).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from kvserve.attention.backend import AttentionMetadata
from kvserve.worker.input_buffers import InputBuffers

logger = logging.getLogger(__name__)


LOGITS_ROWS = 32  # graphs up to this size compute logits and greedy ids too (32 x 152k x 4 B = 19 MB)


@dataclass
class DecodeOutputs:
    """A forward's outputs; logits and greedy ids only from a graph that holds the LM head."""

    hidden: torch.Tensor  # [rows, hidden]
    logits: torch.Tensor | None = None  # [rows, vocab] float32, as compute_logits gives them
    greedy_ids: torch.Tensor | None = None  # [rows] int64: argmax of logits

    def rows(self, n: int) -> "DecodeOutputs":
        cut = (lambda t: None if t is None else t[:n])
        return DecodeOutputs(self.hidden[:n], cut(self.logits), cut(self.greedy_ids))


def decode_forward(model, args, with_logits: bool) -> DecodeOutputs:
    """What a decode graph runs (the runner's eager path computes the same, in pieces)."""
    hidden = model(*args)
    if not with_logits:
        return DecodeOutputs(hidden)
    logits = model.compute_logits(hidden)
    return DecodeOutputs(hidden, logits, logits.argmax(dim=-1))


def batch_size_ladder(max_batch: int) -> list[int]:
    sizes = [1, 2, 4, 8] + list(range(16, 257, 16)) + list(range(288, 1025, 32))
    return [s for s in sizes if s <= max_batch] or [1]


class DecodeGraphs:
    logits_rows = LOGITS_ROWS  # sizes up to this hold the LM head and argmax (none: 0)

    def __init__(self, model, kv_caches: list[torch.Tensor], buffers: InputBuffers, max_batch: int,
                 max_model_len: int) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.buffers = buffers
        self.max_model_len = max_model_len
        self.sizes = batch_size_ladder(max_batch)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, DecodeOutputs] = {}
        self.pool = None  # the graphs' memory pool, shared with the verification graphs
        device = buffers.dev["seq_lens"].device if buffers is not None else torch.device("cpu")
        # [max_batch + 1] int32: one query token per row, so the rows' query offsets never change
        self.row_starts = torch.arange(max_batch + 1, dtype=torch.int32, device=device)

    @property
    def max_batch(self) -> int:
        return self.sizes[-1]

    @torch.inference_mode()
    def capture_all(self, pool=None) -> None:
        """Capture every size into `pool` (a new memory pool if None: kept as self.pool)."""
        self._clear_inputs()
        pool = self.pool = torch.cuda.graph_pool_handle() if pool is None else pool
        for size in reversed(self.sizes):  # largest first: smaller graphs reuse its memory
            with_logits = size <= self.logits_rows
            decode_forward(self.model, self._args(size), with_logits)  # warm-up outside the graph (Triton compiles)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[size] = decode_forward(self.model, self._args(size), with_logits)
            self.graphs[size] = graph
        torch.cuda.synchronize()
        logger.info("captured %s for batch sizes %s", type(self).__name__, self.sizes)

    def _clear_inputs(self) -> None:
        """Padding in every row: the captures write and read no KV."""
        dev = self.buffers.dev
        dev["slot_mapping"].fill_(-1)
        dev["seq_lens"].zero_()

    def _args(self, size: int):
        dev = self.buffers.dev
        meta = AttentionMetadata(
            slot_mapping=dev["slot_mapping"][:size],
            query_start_loc=self.row_starts[: size + 1],
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

    def replay(self, batch: int, size: int) -> DecodeOutputs:
        """Outputs (rows [0, batch)) of a decode step whose inputs are already in the device
        buffers for rows [0, batch) and padding in rows [batch, size). They live in the
        graph's memory until its next replay (the stream orders every reader before it)."""
        self.graphs[size].replay()
        return self.outputs[size].rows(batch)
