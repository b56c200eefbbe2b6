"""Guides follow a request's tokens through its grammar; masks let only allowed tokens through."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from transformers import AutoTokenizer

from kvserve.sampling_params import SamplingParams
from kvserve.structured import grammars
from kvserve.structured.guides import GuideTable
from kvserve.structured.masks import TokenMask, apply_token_mask
from kvserve.structured.spec import StructuredOutputs
from kvserve.worker.sampler import Sampler, SamplingBatch


@dataclass
class Row:
    req_id: str
    token_ids: list[int]
    num_prompt_tokens: int
    params: SamplingParams
    eos_token_id: int | None = None
    num_pending: int = 0


@pytest.fixture(scope="module")
def hf(tool_model):
    return AutoTokenizer.from_pretrained(tool_model)


def allowed(mask: TokenMask, row: int, vocab: int) -> set[int]:
    logits = apply_token_mask(torch.zeros(mask.bits.shape[0], vocab), TokenMask(None, mask.bits))
    return set(torch.isfinite(logits[row]).nonzero().flatten().tolist())


def test_apply_token_mask_touches_only_the_masked_rows():
    logits = torch.randn(3, 70)
    bits = torch.zeros(1, 3, dtype=torch.int32)
    bits[0, 1] = 1 << 3  # only id 35
    out = apply_token_mask(logits.clone(), TokenMask(torch.tensor([1]), bits))
    assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[2])
    assert torch.isfinite(out[1]).nonzero().flatten().tolist() == [35]


def test_the_sampler_picks_only_allowed_tokens():
    logits = torch.randn(2, 64)
    bits = torch.zeros(2, 2, dtype=torch.int32)
    bits[0, 0], bits[1, 1] = 1 << 5, -(1 << 31)  # row 0: id 5; row 1: id 63 (the sign bit)
    batch = SamplingBatch.plain_greedy(2)
    batch.token_mask = TokenMask(torch.tensor([0, 1]), bits)
    ids, _ = Sampler()(logits, batch)
    assert ids == [5, 63]


def test_a_guide_follows_the_output_and_ends_with_the_requests_end_tokens(tool_model, hf):
    table = GuideTable(tool_model, len(hf), torch.device("cpu"))
    grammar = grammars.choice(["Paris", "Rome"])
    row = Row("r1", [1, 2, 3], 3, SamplingParams(structured=StructuredOutputs(grammar), stop_token_ids=[7]),
              eos_token_id=hf.eos_token_id)
    first = allowed(table.token_mask([row]), 0, len(hf))
    assert first and all(("Paris".startswith(hf.decode([t])) or "Rome".startswith(hf.decode([t]))) for t in first)
    row.token_ids += hf.encode("Rome")
    last = allowed(table.token_mask([row]), 0, len(hf))
    assert last == {hf.eos_token_id, 7}  # the grammar is complete: only the request's end tokens


def test_a_guide_rolls_back_tokens_dropped_by_preemption(tool_model, hf):
    table = GuideTable(tool_model, len(hf), torch.device("cpu"))
    row = Row("r1", [1], 1, SamplingParams(structured=StructuredOutputs(grammars.choice(["ab", "cd"]))))
    row.token_ids += hf.encode("a")
    after_a = allowed(table.token_mask([row]), 0, len(hf))
    row.token_ids = [1]  # preempted before its token reached the scheduler: the list is the truth
    restart = allowed(table.token_mask([row]), 0, len(hf))
    assert hf.encode("c")[0] in restart and hf.encode("c")[0] not in after_a


def test_a_grammar_after_a_token_leaves_what_comes_before_free(tool_model, hf):
    end = hf.convert_tokens_to_ids("</think>")
    table = GuideTable(tool_model, len(hf), torch.device("cpu"))
    row = Row("r1", [1], 1, SamplingParams(structured=StructuredOutputs(grammars.choice(["yes"]), end)))
    assert table.token_mask([row]) is None  # thinking: unconstrained
    row.token_ids += hf.encode("hmm") + [end]
    assert allowed(table.token_mask([row]), 0, len(hf)) == {hf.encode("y")[0]} | {
        t for t in range(len(hf)) if "yes".startswith(hf.decode([t])) and hf.decode([t])}


def test_unconstrained_rows_get_no_mask(tool_model, hf):
    table = GuideTable(tool_model, len(hf), torch.device("cpu"))
    rows = [Row("a", [1], 1, SamplingParams()),
            Row("b", [1], 1, SamplingParams(structured=StructuredOutputs(grammars.json_object())))]
    mask = table.token_mask(rows)
    assert mask.rows.tolist() == [1]
    assert table.token_mask(rows[:1]) is None
