"""Constrained generation through the engine, with masks built ahead by the mask job and
requests joining and leaving the batch: greedy outputs are transformers' greedy choice among
the grammar's allowed tokens, token for token, and a seeded request's output does not depend
on the batch it ran in."""

from __future__ import annotations

import llguidance
import llguidance.torch
import numpy as np
import pytest
import torch
import transformers

from kvserve.entrypoints.llm import LLM
from kvserve.sampling_params import SamplingParams
from kvserve.structured import grammars
from kvserve.structured.compiler import load_ll_tokenizer
from kvserve.structured.spec import StructuredOutputs

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["city", "n"],
          "properties": {"city": {"type": "string", "maxLength": 8}, "n": {"type": "integer", "maximum": 999}}}
GRAMMARS = [grammars.json_schema(SCHEMA), grammars.choice(["Paris", "Rome", "Roma"]), grammars.regex(r"[a-z]{3,12}"),
            grammars.lark('start: "(" NUM ("," NUM)* ")"\nNUM: /[0-9]{1,3}/'), None]
PROMPTS = [[5, 9, 14, 3], [20, 21], [33, 8, 8, 40, 41, 2], [100, 101, 102], [7, 7, 7, 60], [11, 250], [90]]
MAX_TOKENS = 24


def reference(model, ll_tokenizer, prompt: list[int], grammar: str | None, ends: list[int]) -> list[int]:
    """Greedy decoding with transformers, masking each step with a fresh matcher's bitmask."""
    matcher = llguidance.LLMatcher(ll_tokenizer, grammar) if grammar else None
    ids, out = list(prompt), []
    while len(out) < MAX_TOKENS:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].float()
        if matcher is not None:
            bits = torch.zeros(1, (logits.shape[0] + 31) // 32, dtype=torch.int32)
            if not matcher.is_stopped():
                llguidance.torch.fill_next_token_bitmask(matcher, bits)
            allowed = np.unpackbits(bits.numpy().view(np.uint8), bitorder="little")[: logits.shape[0]].astype(bool)
            if allowed[ll_tokenizer.eos_token] or matcher.is_stopped():
                allowed[ends] = True
            logits[torch.from_numpy(~allowed)] = float("-inf")
        token = int(logits.argmax())
        out.append(token)
        ids.append(token)
        if token in ends:
            break
        if matcher is not None:
            matcher.consume_token(token)
    return out


@pytest.fixture(scope="module")
def llm(tool_model):
    with LLM(str(tool_model), max_model_len=128, kv_cache_gib=0.01, max_num_seqs=3) as llm:
        yield llm


def params(k: int, **extra) -> SamplingParams:
    grammar = GRAMMARS[k % len(GRAMMARS)]
    return SamplingParams(max_tokens=MAX_TOKENS, stop_token_ids=[7],
                          structured=StructuredOutputs(grammar) if grammar else None, **extra)


def test_greedy_constrained_outputs_match_transformers(llm, tool_model):
    hf = transformers.AutoModelForCausalLM.from_pretrained(tool_model, torch_dtype=torch.float32)
    ll_tokenizer = load_ll_tokenizer(tool_model, hf.config.vocab_size)
    ends = [ll_tokenizer.eos_token, 7]
    outputs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS],
                           [params(k, temperature=0.0) for k in range(len(PROMPTS))], use_tqdm=False)
    for k, (prompt, output) in enumerate(zip(PROMPTS, outputs)):
        expected = reference(hf, ll_tokenizer, prompt, GRAMMARS[k % len(GRAMMARS)], ends)
        assert list(output.outputs[0].token_ids) == expected, k


def test_a_seeded_constrained_request_is_the_same_alone_and_in_a_batch(llm):
    seeded = params(0, temperature=1.0, seed=11)
    alone = llm.generate([{"prompt_token_ids": PROMPTS[0]}], [seeded], use_tqdm=False)[0].outputs[0].token_ids
    batch = [params(k, temperature=1.0, seed=100 + k) for k in range(len(PROMPTS))]
    batch[4] = seeded
    together = llm.generate([{"prompt_token_ids": p} for p in PROMPTS[:4] + [PROMPTS[0]] + PROMPTS[5:]], batch,
                            use_tqdm=False)[4].outputs[0].token_ids
    assert list(together) == list(alone)
    assert llm.get_tokenizer().decode(alone).startswith("{")
