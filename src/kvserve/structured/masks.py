"""Token masks: the host fills one bit per vocabulary id for each constrained row; the
sampler turns disallowed ids' logits to -inf on the device."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TokenMask:
    """Allowed next tokens of some rows of a step's batch."""

    rows: torch.Tensor  # [R] int64: which rows of the sampled batch are constrained
    bits: torch.Tensor  # [R, ceil(V / 32)] int32: bit (id % 32) of word (id // 32) set = allowed


_SHIFTS = torch.arange(32, dtype=torch.int32)


def apply_token_mask(logits: torch.Tensor, mask: TokenMask) -> torch.Tensor:
    """`logits` [N, V] with every disallowed id of the masked rows at -inf (in place)."""
    num_rows, vocab = mask.rows.shape[0], logits.shape[-1]
    shifts = _SHIFTS.to(mask.bits.device)
    allowed = ((mask.bits[:, :, None] >> shifts) & 1).bool().reshape(num_rows, -1)[:, :vocab]  # [R, V]
    rows = logits.index_select(0, mask.rows).masked_fill_(~allowed, float("-inf"))
    return logits.index_copy_(0, mask.rows, rows)


def words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def allow(bits: torch.Tensor, row: int, token_ids: list[int]) -> None:
    """Set the bits of `token_ids` in host row `row` of an int32 bitmask."""
    for token in token_ids:
        word = int(bits[row, token >> 5]) & 0xFFFFFFFF | (1 << (token & 31))
        bits[row, token >> 5] = word - (1 << 32) if word >= 1 << 31 else word
