"""Constrained requests beside speculating ones: with n-gram speculation on, steps verify
some requests' drafts while constrained requests decode one token each in the same step;
every constrained token is still sampled under its grammar's mask (greedy outputs are
transformers' greedy choice among the allowed tokens, token for token) and the grammar
matchers never see a token their grammar forbids."""

from __future__ import annotations

import pytest
import torch
import transformers

from kvserve.entrypoints.llm import LLM
from kvserve.sampling_params import SamplingParams
from kvserve.structured.compiler import load_ll_tokenizer
from kvserve.structured.spec import StructuredOutputs
from tests.structured.test_constrained_generation import GRAMMARS, MAX_TOKENS, PROMPTS, reference

NGRAM = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3, "prompt_lookup_min": 1}
COPY_PROMPT = [40, 41, 42, 43, 44] * 6  # speculation proposes drafts for it from the first decode step


@pytest.fixture(scope="module")
def llm(tool_model):
    with LLM(str(tool_model), max_model_len=128, kv_cache_gib=0.01, max_num_seqs=8, speculative_config=NGRAM) as llm:
        yield llm


def test_constrained_rows_of_verification_steps_are_masked(llm, tool_model):
    hf = transformers.AutoModelForCausalLM.from_pretrained(tool_model, torch_dtype=torch.float32)
    ll_tokenizer = load_ll_tokenizer(tool_model, hf.config.vocab_size)
    ends = [ll_tokenizer.eos_token, 7]
    constrained = [k for k, g in enumerate(GRAMMARS) if g is not None]
    prompts = [COPY_PROMPT, *(PROMPTS[k] for k in constrained), COPY_PROMPT[3:]]
    params = [SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True),
              *(SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, stop_token_ids=[7],
                               structured=StructuredOutputs(GRAMMARS[k])) for k in constrained),
              SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)]
    before = llm.engine.core.stats().spec_decode.num_drafts
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    assert llm.engine.core.stats().spec_decode.num_drafts - before >= 2  # verification steps did run
    for n, k in enumerate(constrained, start=1):
        expected = reference(hf, ll_tokenizer, PROMPTS[k], GRAMMARS[k], ends)
        assert list(outputs[n].outputs[0].token_ids) == expected, k
