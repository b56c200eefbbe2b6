"""Sharded layers. Column-parallel projections need no layer of their own: each rank
keeps a block of the output rows of a plain nn.Linear (shard.py slices them). The
layers here end in a collective: a row-parallel projection sums the ranks' partial
outputs, the vocabulary-parallel embedding sums the rows only one rank holds, and the
vocabulary-parallel LM head gathers each rank's slice of the logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kvserve.parallel.group import RankGroup


class RowParallelLinear(nn.Module):
    """y = all_reduce(x_local @ W_local^T) + b, for x split by columns across the ranks.

    `linear` holds this rank's block of input columns and no bias (a plain nn.Linear, so
    that a weight transform such as quantization can still replace it); the bias is added
    once, after the sum."""

    def __init__(self, linear: nn.Linear, bias: torch.Tensor | None, group: RankGroup):
        super().__init__()
        self.linear = linear
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.group.all_reduce(self.linear(x))
        return y if self.bias is None else y + self.bias


class VocabParallelEmbedding(nn.Module):
    """This rank's rows [start, start + rows) of the embedding; a token outside them looks
    up zeros here, and the sum over the ranks gives every token its one row."""

    def __init__(self, weight: torch.Tensor, start: int, group: RankGroup):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)  # [rows, hidden]
        self.start = start
        self.group = group

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        local = input_ids - self.start
        outside = (local < 0) | (local >= self.weight.shape[0])
        x = F.embedding(local.masked_fill(outside, 0), self.weight)  # [T, hidden]
        return self.group.all_reduce(x.masked_fill(outside[:, None], 0))


class VocabParallelHead(nn.Module):
    """Logits of this rank's vocabulary rows, gathered so that every rank holds all of them
    (each samples the same ids from the same logits: no ids travel back). Rows past
    `vocab_size` pad the vocabulary to a multiple of the ranks and are cut off."""

    def __init__(self, linear: nn.Linear, vocab_size: int, group: RankGroup):
        super().__init__()
        self.linear = linear  # [rows, hidden]: this rank's slice
        self.vocab_size = vocab_size
        self.group = group

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.group.all_gather_last(self.linear(hidden))[..., : self.vocab_size]
