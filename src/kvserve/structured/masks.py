"""Token masks: the host fills one bit per vocabulary id for each constrained row; the
sampler turns disallowed ids' logits to -inf on the device, in one pass over the rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TokenMask:
    """Allowed next tokens of some rows of a step's batch."""

    rows: torch.Tensor | None  # [R] int64: which rows of the sampled batch are constrained; None = all, in order
    bits: torch.Tensor  # [R, ceil(V / 32)] int32: bit (id % 32) of word (id // 32) set = allowed


_BIT_VALUES: dict[torch.device, torch.Tensor] = {}  # per device: [32] int32, bit k of a word (bit 31 = sign)


def _disallowed_torch(bits: torch.Tensor, vocab: int) -> torch.Tensor:
    """[R, V] bool, True = disallowed: two elementwise kernels (no per-row work)."""
    values = _BIT_VALUES.get(bits.device)
    if values is None:  # once per device: a copy from pageable memory waits for the device
        values = torch.tensor([1 << k if k < 31 else -(1 << 31) for k in range(32)], dtype=torch.int32)
        values = _BIT_VALUES.setdefault(bits.device, values.to(bits.device))
    return ((bits[:, :, None] & values) == 0).view(bits.shape[0], -1)[:, :vocab]


def _disallowed_numpy(bits: torch.Tensor, vocab: int) -> torch.Tensor:
    """[R, V] bool on the CPU: numpy unpacks the inverted bits in C, several times faster than
    torch's elementwise ops there (and no [R, V, 32] int32 intermediate)."""
    inverted = np.invert(bits.numpy())  # little-endian words: byte j of a word holds ids 8j..8j+7
    unpacked = np.unpackbits(inverted.view(np.uint8), axis=1, bitorder="little")  # [R, 32W] of 0/1
    return torch.from_numpy(unpacked).view(torch.bool)[:, :vocab]


# device type -> [R, W] int32 bits -> [R, V] bool disallowed
DISALLOWED: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {"cpu": _disallowed_numpy}


def apply_token_mask(logits: torch.Tensor, mask: TokenMask) -> torch.Tensor:
    """`logits` [N, V] with every disallowed id of the masked rows at -inf (in place)."""
    vocab = logits.shape[-1]
    disallowed = DISALLOWED.get(logits.device.type, _disallowed_torch)(mask.bits, vocab)
    if mask.rows is None:
        return logits.masked_fill_(disallowed, float("-inf"))
    rows = logits.index_select(0, mask.rows).masked_fill_(disallowed, float("-inf"))
    return logits.index_copy_(0, mask.rows, rows)


def words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def allow(bits: np.ndarray, row: int, token_ids: list[int]) -> None:
    """Set the bits of `token_ids` in row `row` of an int32 bitmask (a numpy view)."""
    ids = np.asarray(token_ids, dtype=np.int64)
    np.bitwise_or.at(bits[row], ids >> 5, (np.ones_like(ids) << (ids & 31)).astype(np.uint32).view(np.int32))
