"""Applying a step's token masks: the CPU's numpy path and the device's torch path agree
with a per-id reference, for every row layout the runner sends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kvserve.structured.masks import TokenMask, _disallowed_numpy, _disallowed_torch, allow, apply_token_mask


def reference(logits: torch.Tensor, rows: list[int], bits: torch.Tensor) -> torch.Tensor:
    out = logits.clone()
    for r, row in enumerate(rows):
        for token in range(logits.shape[1]):
            if not (int(bits[r, token // 32]) >> (token % 32)) & 1:
                out[row, token] = float("-inf")
    return out


@pytest.mark.parametrize("vocab", [64, 70, 95])  # whole words, and a last word cut short
def test_both_unpackings_give_the_reference(vocab):
    gen = torch.Generator().manual_seed(vocab)
    bits = torch.randint(-(2**31), 2**31 - 1, (5, (vocab + 31) // 32), dtype=torch.int32, generator=gen)
    bits[0] = -1  # everything allowed
    bits[1, :] = 0
    bits[1, -1] = -(2**31)  # only the sign bit of the last word (past the vocabulary when it is cut short)
    expected = reference(torch.zeros(5, vocab), list(range(5)), bits)
    assert torch.equal(_disallowed_numpy(bits, vocab), torch.isinf(expected))
    assert torch.equal(_disallowed_torch(bits, vocab), torch.isinf(expected))


def test_all_rows_in_order_and_some_rows_give_the_same_logits():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 100, generator=gen)
    bits = torch.randint(-(2**31), 2**31 - 1, (4, 4), dtype=torch.int32, generator=gen)
    whole = apply_token_mask(logits.clone(), TokenMask(None, bits))
    assert torch.equal(whole, reference(logits, [0, 1, 2, 3], bits))
    some = apply_token_mask(logits.clone(), TokenMask(torch.tensor([3, 1]), bits[:2]))
    assert torch.equal(some, reference(logits, [3, 1], bits[:2]))


def test_allow_sets_bits_including_the_sign_bit_and_repeated_words():
    bits = np.zeros((2, 3), dtype=np.int32)
    allow(bits, 1, [31, 0, 5, 64, 95, 5])
    assert bits[0].tolist() == [0, 0, 0]
    assert bits[1].tolist() == [-(2**31) | 1 | 32, 0, 1 | -(2**31)]
