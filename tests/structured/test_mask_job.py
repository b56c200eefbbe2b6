"""The mask job builds a step's masks ahead while the ids are still in flight: its masks are
the ones built in place from the token lists, through finishing grammars, a grammar that
starts after a token, preemption and requests joining, and a followed step waits for no ids."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
import torch
from transformers import AutoTokenizer

from kvserve.sampling_params import SamplingParams
from kvserve.structured import grammars
from kvserve.structured.guides import GuideTable
from kvserve.structured.masks import TokenMask, apply_token_mask
from kvserve.structured.spec import StructuredOutputs


@dataclass
class Row:
    req_id: str
    token_ids: list[int]
    num_prompt_tokens: int
    params: SamplingParams
    eos_token_id: int | None = None
    num_pending: int = 0
    pending: list[int] = field(default_factory=list)

    def apply(self) -> None:  # the step's ids reach the token list (StepHandle.result)
        self.token_ids += self.pending
        self.pending, self.num_pending = [], 0


def allowed_sets(mask: TokenMask | None, rows: list[Row], vocab: int) -> list[set[int] | None]:
    """Per row, its allowed ids (None = unconstrained)."""
    out: list[set[int] | None] = [None] * len(rows)
    if mask is None:
        return out
    logits = apply_token_mask(torch.zeros(len(rows), vocab), mask)
    index = range(len(rows)) if mask.rows is None else mask.rows.tolist()
    for row in index:
        out[row] = set(torch.isfinite(logits[row]).nonzero().flatten().tolist())
    return out


@pytest.fixture(scope="module")
def hf(tool_model):
    return AutoTokenizer.from_pretrained(tool_model)


def requests(hf) -> list[tuple[str, SamplingParams]]:
    think_end = hf.convert_tokens_to_ids("</think>")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"enum": ["x", "y"]}},
              "required": ["a", "b"], "additionalProperties": False}
    spec = {
        "json": StructuredOutputs(grammars.json_schema(schema)),
        "choice": StructuredOutputs(grammars.choice(["Paris", "Rome", "Roma"])),
        "regex": StructuredOutputs(grammars.regex(r"[0-9]{2,6}")),
        "think": StructuredOutputs(grammars.choice(["yes", "no"]), after_token_id=think_end),
    }
    out = [(name, SamplingParams(structured=s, stop_token_ids=[7])) for name, s in spec.items()]
    return out + [("free", SamplingParams())]


def test_the_jobs_masks_are_the_ones_built_in_place_and_followed_steps_wait_for_no_ids(tool_model, hf):
    vocab, rng = len(hf), random.Random(0)
    ahead = GuideTable(tool_model, vocab, torch.device("cpu"), background=True)  # a mask job after every step
    inline = GuideTable(tool_model, vocab, torch.device("cpu"))  # no jobs: builds from the lists
    think_end = hf.convert_tokens_to_ids("</think>")
    kinds = requests(hf)
    made = 0

    def new_rows(n: int) -> tuple[list[Row], list[Row]]:
        nonlocal made
        pairs = []
        for _ in range(n):
            name, params = kinds[made % len(kinds)]
            rid = f"{name}-{made}"
            made += 1
            pairs.append((Row(rid, [1, 2], 2, params, hf.eos_token_id), Row(rid, [1, 2], 2, params, hf.eos_token_id)))
        return [a for a, _ in pairs], [b for _, b in pairs]

    rows_a, rows_b = new_rows(6)
    waits, followed_steps = [], 0
    for step in range(40):
        calls = []
        mask_a = ahead.token_mask(rows_a, lambda: (calls.append(1), [r.apply() for r in rows_a]))
        for r in rows_a:
            r.apply()  # the engine applies the step in flight after launching the next
        mask_b = inline.token_mask(rows_b)
        sets_a, sets_b = allowed_sets(mask_a, rows_a, vocab), allowed_sets(mask_b, rows_b, vocab)
        assert sets_a == sets_b, (step, [a.req_id for a in rows_a])
        if step and not calls and any(s is not None for s in sets_a):
            followed_steps += 1
        waits.append(bool(calls))
        ids = []
        for row, allowed in zip(rows_b, sets_b):
            options = sorted(allowed) if allowed is not None else list(range(vocab))
            if row.params.structured and row.params.structured.after_token_id and rng.random() < 0.2:
                options.append(think_end)  # make the reasoning end, now and then
            ids.append(rng.choice(options))
        for a, b, token in zip(rows_a, rows_b, ids):
            a.pending, a.num_pending = [token], 1
            b.token_ids.append(token)
        ahead.start_job(rows_a, lambda ids=ids: ids)
        rows_a, rows_b = churn(step, rows_a, rows_b, new_rows, ahead, inline, hf)
    ahead.close()
    assert followed_steps >= 35 and not any(waits)


def churn(step, rows_a, rows_b, new_rows, ahead, inline, hf):
    """Requests finish (an end token, or max_tokens) and new ones join; every 7th step a
    request is preempted and loses its newest output token."""
    keep = [k for k, b in enumerate(rows_b) if b.token_ids[-1] not in (hf.eos_token_id, 7)
            and len(b.token_ids) - b.num_prompt_tokens < b.params.max_tokens]
    for k in set(range(len(rows_b))) - set(keep):
        ahead.drop(rows_b[k].req_id)
        inline.drop(rows_b[k].req_id)
    rows_a, rows_b = [rows_a[k] for k in keep], [rows_b[k] for k in keep]
    if step % 7 == 3 and rows_a:
        a, b = rows_a[0], rows_b[0]
        a.apply()
        for row in (a, b):
            if len(row.token_ids) > row.num_prompt_tokens:
                row.token_ids.pop()
    more_a, more_b = new_rows(6 - len(rows_a))
    return rows_a + more_a, rows_b + more_b
