"""Speculative decoding with a draft model, end to end on tiny models: the output is plain
decoding's, and the draft's KV pool keeps up with the target's.

Two drafts of the tiny Llama's vocabulary: the target itself (its greedy proposals are
the target's own argmax, so every one must be accepted: a draft that missed the KV of any
position, after chunked prefill, preemption, a prefix-cache hit or steps without
proposals, would propose something else) and the target cut to its first layer (some
proposals accepted, most rejected: the roll back is exercised).
"""

import json
import shutil

import pytest
import transformers

from kvserve import LLM, SamplingParams
from kvserve.config import ConfigError
from tests.conftest import build_model
from tests.engine.test_spec_decode import PROMPTS

SETTINGS = dict(kv_cache_gib=0.01, max_model_len=256)
GREEDY = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)


def draft_config(draft, k=4) -> dict:
    return {"method": "draft_model", "model": str(draft), "num_speculative_tokens": k}


@pytest.fixture(scope="module")
def one_layer_draft(tiny_llama, tmp_path_factory):
    """The target's embeddings, first layer and head: a weaker model of the same tokenizer."""
    out = tmp_path_factory.mktemp("one-layer-draft")
    target = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama)
    config = target.config
    config.num_hidden_layers = 1
    draft = transformers.LlamaForCausalLM(config)
    draft.load_state_dict(target.state_dict(), strict=False)  # layer 1 of the target is left out
    draft.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_llama / name, out / name)
    return out


@pytest.fixture(scope="module")
def plain(tiny_llama):
    with LLM(model=str(tiny_llama), **SETTINGS) as llm:
        yield llm


def ids(llm, params, prompts=PROMPTS) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]


def test_the_target_as_its_own_draft_is_always_accepted(tiny_llama, plain):
    with LLM(model=str(tiny_llama), **SETTINGS, speculative_config=draft_config(tiny_llama)) as spec:
        assert ids(spec, GREEDY) == ids(plain, GREEDY)
        stats = spec.engine.core.stats().spec_decode
    assert stats.num_draft_tokens > 100 and stats.num_accepted_tokens == stats.num_draft_tokens


def test_a_weaker_draft_keeps_greedy_output_stops_and_logprobs(tiny_llama, plain, one_layer_draft):
    params = [GREEDY, SamplingParams(temperature=0, max_tokens=7, ignore_eos=True),
              SamplingParams(temperature=0, max_tokens=30, frequency_penalty=0.3, min_tokens=4, logprobs=2)]
    with LLM(model=str(tiny_llama), **SETTINGS, speculative_config=draft_config(one_layer_draft, 3)) as spec:
        for p in params:
            ref, got = plain.generate(PROMPTS, p, use_tqdm=False), spec.generate(PROMPTS, p, use_tqdm=False)
            for r, g in zip(ref, got):
                r, g = r.outputs[0], g.outputs[0]
                assert (g.token_ids, g.text, g.finish_reason) == (r.token_ids, r.text, r.finish_reason)
                assert [list(lp) for lp in g.logprobs or []] == [list(lp) for lp in r.logprobs or []]
        stop = ids(plain, GREEDY)[2][9]  # a token from the middle of an output
        stopped = SamplingParams(temperature=0, max_tokens=40, stop_token_ids=[stop])
        assert ids(spec, stopped, PROMPTS[2:3]) == ids(plain, stopped, PROMPTS[2:3])
        stats = spec.engine.core.stats().spec_decode
    assert 0 < stats.num_accepted_tokens < stats.num_draft_tokens


def test_chunked_prefill_preemption_prefix_hits_and_steps_without_proposals(tiny_llama):
    """The draft follows every step: prompts in chunks of 16 tokens, 16 requests in 12
    blocks (preemptions, recompute through the prefix cache), and no proposals while more
    than 3 requests run (the overlapped steps read ids still on the device)."""
    params = SamplingParams(temperature=0, max_tokens=60, ignore_eos=True)
    prompts = PROMPTS * 2
    with LLM(model=str(tiny_llama), max_model_len=256) as plain:
        ref = ids(plain, params, prompts)
    spec_config = {**draft_config(tiny_llama), "disable_by_batch_size": 3}
    with LLM(model=str(tiny_llama), max_model_len=128, num_gpu_blocks_override=12, max_num_batched_tokens=16,
             speculative_config=spec_config) as spec:
        got = ids(spec, params, prompts)
        stats = spec.engine.core.stats()
    assert got == ref
    assert stats.num_preemptions > 0 and stats.prefix_cache_hits > 0
    assert stats.spec_decode.num_draft_tokens > 50
    assert stats.spec_decode.num_accepted_tokens == stats.spec_decode.num_draft_tokens


def test_sampled_output_is_seeded_and_reproducible(tiny_llama):
    # within the top 2 tokens: the random model's distributions are flat, its argmax (the
    # draft's proposal) has p ~ 1/2 there, next to nothing over the whole vocabulary
    params = SamplingParams(temperature=1.0, top_k=2, max_tokens=32, seed=7, ignore_eos=True)
    with LLM(model=str(tiny_llama), **SETTINGS, speculative_config=draft_config(tiny_llama)) as spec:
        first, again = ids(spec, params), ids(spec, params)
        other = ids(spec, SamplingParams(temperature=1.0, top_k=2, max_tokens=32, seed=8, ignore_eos=True))
        stats = spec.engine.core.stats().spec_decode
    assert first == again and first != other and all(len(t) == 32 for t in first)
    assert 0 < stats.num_accepted_tokens < stats.num_draft_tokens  # the target's argmax, sampled or not


def _with_swapped_tokens(source, out):
    """A copy of `source` whose tokenizer maps two tokens to each other's id."""
    shutil.copytree(source, out)
    path = out / "tokenizer.json"
    data = json.loads(path.read_text())
    vocab = data["model"]["vocab"]
    a, b = [t for t, i in vocab.items() if i in (100, 101)]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    path.write_text(json.dumps(data))
    return out


def test_a_draft_of_another_vocabulary_is_refused_with_the_reason(tiny_llama, tmp_path):
    bigger = build_model("llama", tmp_path / "bigger-vocab", vocab_size=400)
    with pytest.raises(ConfigError, match="vocabulary of 400 ids, the target 384"):
        LLM(model=str(tiny_llama), **SETTINGS, speculative_config=draft_config(bigger))
    swapped = _with_swapped_tokens(tiny_llama, tmp_path / "swapped")
    with pytest.raises(ConfigError, match="another tokenizer than the target.*4 \\(token, id\\) pairs"):
        LLM(model=str(tiny_llama), **SETTINGS, speculative_config=draft_config(swapped))
    short = build_model("llama", tmp_path / "short-context", max_position_embeddings=128)
    with pytest.raises(ConfigError, match="takes 128 positions, fewer than max_model_len=256"):
        LLM(model=str(tiny_llama), **SETTINGS, speculative_config=draft_config(short))
    with pytest.raises(ConfigError, match="in 1..8 with a draft model"):
        LLM(model=str(tiny_llama), **SETTINGS, speculative_config=draft_config(tiny_llama, 9))
