"""The model runner's guides: one per constrained request, and the step's token mask."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import llguidance
import llguidance.torch
import torch

from kvserve.sampling_params import SamplingParams
from kvserve.structured.compiler import GrammarCompiler, load_ll_tokenizer
from kvserve.structured.guide import Guide
from kvserve.structured.masks import TokenMask, allow, words

logger = logging.getLogger(__name__)


class GuidedRow(Protocol):
    """What a guide needs of a request in the runner (worker.request_state.RequestState)."""

    req_id: str
    token_ids: list[int]
    num_prompt_tokens: int
    params: SamplingParams
    eos_token_id: int | None


class GuideTable:
    """Guides by request id, kept across preemption until the request finishes. The
    tokenizer and compiler are made on the first constrained request."""

    def __init__(self, tokenizer_path: str | Path | None, vocab_size: int) -> None:
        self.tokenizer_path = tokenizer_path
        self.vocab_size = vocab_size
        self._compiler: GrammarCompiler | None = None
        self._executor: llguidance.LLExecutor | None = None
        self._guides: dict[str, Guide] = {}

    @property
    def compiler(self) -> GrammarCompiler:
        if self._compiler is None:
            if self.tokenizer_path is None:
                raise ValueError("structured outputs need the model's tokenizer")
            self._compiler = GrammarCompiler(load_ll_tokenizer(self.tokenizer_path, self.vocab_size))
            self._executor = llguidance.LLExecutor()
        return self._compiler

    def drop(self, req_id: str) -> None:
        self._guides.pop(req_id, None)

    def token_mask(self, rows: Sequence[GuidedRow], device: torch.device) -> TokenMask | None:
        """The allowed tokens of every constrained row whose grammar has started; None if none.
        Each row's output must be on the host (the runner waits for its last step first)."""
        active = [(i, row, guide) for i, row in enumerate(rows)
                  if row.params.structured is not None and (guide := self._caught_up(row)).active]
        if not active:
            return None
        bits = torch.zeros(len(active), words(self.vocab_size), dtype=torch.int32)  # [R, W] on the host
        running = [(guide.matcher, k) for k, (_, _, guide) in enumerate(active) if not guide.finished]
        if running:
            llguidance.torch.fill_next_token_bitmask_par(self._executor, running, bits)
        eos = self.compiler.tokenizer.eos_token
        for k, (_, row, guide) in enumerate(active):
            if guide.finished or _allowed(bits, k, eos):  # the request's own end tokens count as EOS
                allow(bits, k, _end_tokens(row, eos))
        index = torch.tensor([i for i, _, _ in active], dtype=torch.int64)
        return TokenMask(index.to(device), bits.to(device))

    def _caught_up(self, row: GuidedRow) -> Guide:
        guide = self._guides.get(row.req_id)
        if guide is None:
            guide = Guide(self.compiler.matcher(row.params.structured.grammar), row.params.structured)
            self._guides[row.req_id] = guide
        guide.catch_up(row.token_ids, row.num_prompt_tokens)
        return guide


def _allowed(bits: torch.Tensor, row: int, token: int) -> bool:
    return bool((int(bits[row, token >> 5]) >> (token & 31)) & 1)


def _end_tokens(row: GuidedRow, eos: int) -> list[int]:
    ends = [eos, *row.params.stop_token_ids]
    return ends + [row.eos_token_id] if row.eos_token_id is not None else ends
