"""CUDA graphs for speculative verification steps, which replay as decode steps.

A verification step computes, per request, its next token and up to k drafts after its
cached context. Token j of the step, at position p_j, is attended as a decode row of its
own: one query, context length p_j + 1, its request's block table. The step's K/V are
stored before attention reads the cache, so each draft sees the tokens before it and
none after (causal), and the decode kernel's grid depends only on the row count. A step
of T tokens (any mix of draft counts, a request with none included; at most k + 1
tokens per request) replays the graph of the smallest captured row count R >= T; rows
[T, R) are padding (slot -1: no KV write; context 0: no attention, zeros out). Only the
real rows' logits are sampled.

The row counts are S * (k + 1) for S on the decode ladder up to the speculation's
back-off batch size (DEFAULT_MAX_BATCH without one). Each row reads its request's whole
context, so a request verifying k drafts reads its KV k + 1 times: cheap at the small
batches speculation runs at, which is why the ladder stops there (larger steps run
eagerly, through the chunked-prefill kernel).
"""

from __future__ import annotations

import numpy as np
import torch

from kvserve.attention.backend import AttentionMetadata
from kvserve.worker.cuda_graphs import DecodeGraphs, DecodeOutputs, batch_size_ladder
from kvserve.worker.input_buffers import InputBuffers

DEFAULT_MAX_BATCH = 32  # without disable_by_batch_size: requests in the largest verification graph


def verify_ladder(max_batch: int, q: int, max_tokens: int, disable_by_batch_size: int | None) -> list[int]:
    """Row counts to capture: S * q for S on the decode ladder up to the back-off batch size
    (the cap itself included: a full speculating batch), as far as the input buffers hold."""
    cap = min(max_batch, disable_by_batch_size or DEFAULT_MAX_BATCH)
    sizes = sorted(set(batch_size_ladder(cap)) | {cap})
    return [s * q for s in sizes if s * q <= max_tokens]


def expand_to_rows(np_: dict[str, np.ndarray], query_lens: list[int], num_tokens: int, width: int,
                   size: int) -> np.ndarray:
    """Turn a packed step (`num_tokens` tokens, per-request rows already in the host buffers)
    into `size` decode rows: per token its context length and its request's block table;
    padding after the last token. Returns the real rows' context lengths."""
    owner = np.repeat(np.arange(len(query_lens)), query_lens)  # [num_tokens] request of each token
    np_["verify_tables"][:num_tokens, :width] = np_["block_tables"][owner, :width]
    lens = np_["verify_seq_lens"]
    lens[:num_tokens] = np_["positions"][:num_tokens] + 1
    lens[num_tokens:size] = 0
    np_["input_ids"][num_tokens:size] = 0
    np_["positions"][num_tokens:size] = 0  # inside every rotary table
    np_["slot_mapping"][num_tokens:size] = -1
    return lens[:num_tokens]


class VerifyGraphs(DecodeGraphs):
    """Decode graphs over the per-token rows of verification steps (see the module doc)."""

    logits_rows = 0  # the rejection sampler reads its own rows' logits

    def __init__(self, model, kv_caches: list[torch.Tensor], buffers: InputBuffers, sizes: list[int], q: int,
                 max_model_len: int) -> None:
        super().__init__(model, kv_caches, buffers, sizes[-1], max_model_len)
        self.sizes = sizes
        self.q = q  # k + 1: the most tokens a request may have in a replayed step
        self.replays = 0  # verification steps replayed (tests and benchmarks read it)

    def graph_rows(self, query_lens: list[int]) -> int | None:
        """Rows of the graph a step of these query lengths replays, or None (it runs eagerly):
        a request with more than q tokens (a prompt chunk) would read its context too often."""
        if max(query_lens) > self.q:
            return None
        num_tokens = sum(query_lens)
        return next((s for s in self.sizes if s >= num_tokens), None)

    def metadata(self, rows: int, slot_mapping: torch.Tensor, seq_lens_cpu: list[int],
                 max_seq_len: int) -> AttentionMetadata:
        """Decode metadata over the first `rows` rows of the verification buffers."""
        dev = self.buffers.dev
        return AttentionMetadata(
            slot_mapping=slot_mapping,
            query_start_loc=self.row_starts[: rows + 1],
            seq_lens=dev["verify_seq_lens"][:rows],
            block_tables=dev["verify_tables"][:rows],
            query_lens_cpu=[1] * rows,
            seq_lens_cpu=seq_lens_cpu,
            max_query_len=1,
            max_seq_len=max_seq_len,
        )

    def _clear_inputs(self) -> None:
        self.buffers.dev["slot_mapping"].fill_(-1)
        self.buffers.dev["verify_seq_lens"].zero_()

    def _args(self, size: int):
        dev = self.buffers.dev
        # seq_lens_cpu: the longest context sizes the decode split, for any step
        meta = self.metadata(size, dev["slot_mapping"][:size], [self.max_model_len] * size, self.max_model_len)
        return dev["input_ids"][:size], dev["positions"][:size], self.kv_caches, meta

    def replay(self, batch: int, size: int) -> DecodeOutputs:
        self.replays += 1
        return super().replay(batch, size)
