"""CUDA graphs for speculative verification steps: a request verifying up to k drafts has
at most q = k + 1 query tokens, so a step of B such requests fits the graph captured for
the smallest ladder size S >= B with S * q token rows.

A step is packed as usual (each request's real tokens, back to back) and padded after
its last real token: the padding tokens have slot -1 (no KV write) and position 0, the
padding sequences S - B have query length 0 and context 0, so the attention kernel's
programs for them exit at once. The graph runs the prefill kernel alone, its grid fixed
at (S, tiles of q queries, heads) and everything else read on the device
(query_start_loc, seq_lens, block tables), so requests with fewer drafts (back-off,
short proposals, none at all) replay the same graph. A prompt chunk of at most q tokens
in the same step fits too (the kernel is the causal chunked-prefill one). Only the real
rows' logits are sampled; the padding rows' hidden states (left unwritten by attention)
never reach a real row: attention reads K/V from the cache only, and every other layer
works row by row.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from kvserve.attention.backend import AttentionMetadata
from kvserve.worker.cuda_graphs import batch_size_ladder
from kvserve.worker.input_buffers import InputBuffers

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32  # without disable_by_batch_size: larger verification steps run eagerly


def verify_ladder(max_batch: int, q: int, max_tokens: int, disable_by_batch_size: int | None) -> list[int]:
    """Batch sizes to capture: the decode ladder up to the speculation's back-off batch size
    (DEFAULT_MAX_BATCH without one), each of whose S * q token rows fits the input buffers."""
    cap = min(max_batch, disable_by_batch_size or DEFAULT_MAX_BATCH)
    sizes = sorted(set(batch_size_ladder(cap)) | {cap})  # the cap itself: a full speculating batch
    return [s for s in sizes if s * q <= max_tokens]


def pad_verify_step(np_: dict[str, np.ndarray], num_tokens: int, num_seqs: int, size: int, q: int) -> int:
    """Pad a packed step of `num_tokens` tokens and `num_seqs` requests in the host buffers
    to a graph's `size` requests and `size * q` tokens; returns the padded token count."""
    end = size * q
    np_["input_ids"][num_tokens:end] = 0
    np_["positions"][num_tokens:end] = 0  # inside every rotary table
    np_["slot_mapping"][num_tokens:end] = -1
    np_["query_start_loc"][num_seqs + 1 : size + 1] = num_tokens  # query length 0
    np_["seq_lens"][num_seqs:size] = 0
    return end


class VerifyGraphs:
    """One graph per ladder size for steps whose requests have at most q query tokens each."""

    def __init__(self, model, kv_caches: list[torch.Tensor], buffers: InputBuffers, sizes: list[int], q: int,
                 max_model_len: int) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.buffers = buffers
        self.sizes = sizes
        self.q = q
        self.max_model_len = max_model_len
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.replays = 0  # verification steps replayed (tests and benchmarks read it)

    def padded_size(self, query_lens: list[int]) -> int | None:
        """The graph size a step of these query lengths replays, or None (eager)."""
        if max(query_lens) > self.q:
            return None
        return next((s for s in self.sizes if s >= len(query_lens)), None)

    @torch.inference_mode()
    def capture_all(self, pool) -> None:
        """Capture every size into `pool` (the decode graphs' memory pool: one step runs at a time)."""
        dev = self.buffers.dev
        dev["slot_mapping"].fill_(-1)
        dev["seq_lens"].zero_()
        dev["query_start_loc"].zero_()  # every sequence empty: capture writes and reads no KV
        dev["positions"].zero_()
        for size in reversed(self.sizes):
            self.model(*self._args(size))  # warm-up outside the graph (Triton compiles here)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[size] = self.model(*self._args(size))
            self.graphs[size] = graph
        torch.cuda.synchronize()
        logger.info("captured verification CUDA graphs (q=%d) for batch sizes %s", self.q, self.sizes)

    def _args(self, size: int):
        dev, tokens = self.buffers.dev, size * self.q
        meta = AttentionMetadata(
            slot_mapping=dev["slot_mapping"][:tokens],
            query_start_loc=dev["query_start_loc"][: size + 1],
            seq_lens=dev["seq_lens"][:size],
            block_tables=dev["block_tables"][:size],
            # no query length 1 on the host: the prefill kernel alone, which reads each
            # sequence's real query length (1 to q, or 0 for padding) on the device
            query_lens_cpu=[self.q] * size,
            seq_lens_cpu=[self.max_model_len] * size,
            max_query_len=self.q,
            max_seq_len=self.max_model_len,
        )
        return dev["input_ids"][:tokens], dev["positions"][:tokens], self.kv_caches, meta

    def replay(self, size: int) -> torch.Tensor:
        """Hidden states [size * q, hidden] of a step whose padded inputs are in the device
        buffers; rows past the step's real tokens are padding."""
        self.graphs[size].replay()
        self.replays += 1
        return self.outputs[size]
