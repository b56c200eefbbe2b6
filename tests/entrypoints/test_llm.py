"""The offline API against Hugging Face transformers on the same tiny random weights."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kvserve import LLM, SamplingParams

PROMPTS = [
    "The capital of France is",
    "Hello world! How are you today? I am fine, thank you. Continuous batching schedules",
    "def add(a, b):\n    return a",
]
NEW_TOKENS = 40  # crosses several 16-token blocks


def hf_greedy(model_dir, prompts, max_new_tokens=NEW_TOKENS, eos_may_win=False):
    """transformers' greedy tokens and raw logprobs, float32 on the CPU. The run never stops
    early: EOS is forbidden (min_new_tokens), or with eos_may_win an argmax EOS is kept and
    the run goes on, as the engine's ignore_eos does."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    length = dict(eos_token_id=None, pad_token_id=tok.pad_token_id) if eos_may_win else dict(
        min_new_tokens=max_new_tokens)
    results = []
    for p in prompts:
        ids = tok(p, return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, **length)
        tokens = out.sequences[0, ids.shape[1]:].tolist()
        logprobs = [torch.log_softmax(s[0].float(), -1) for s in out.logits]  # raw, before processors
        results.append((tokens, logprobs))
    return results


GREEDY = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=3)


def assert_matches_hf(outputs, reference):
    for out, (ref_tokens, ref_logprobs) in zip(outputs, reference):
        completion = out.outputs[0]
        assert completion.token_ids == ref_tokens
        for position, token, ref in zip(completion.logprobs, completion.token_ids, ref_logprobs):
            assert abs(position[token].logprob - ref[token].item()) < 1e-4


def test_greedy_matches_transformers(tiny_model):
    llm = LLM(model=str(tiny_model), kv_cache_gib=0.01)
    assert_matches_hf(llm.generate(PROMPTS, GREEDY), hf_greedy(tiny_model, PROMPTS))


def test_llama3_rope_scaling_matches_transformers(tiny_llama3_rope):
    llm = LLM(model=str(tiny_llama3_rope), kv_cache_gib=0.01)
    # long enough to pass the original context of 64 positions where the scaling bites
    prompts = [PROMPTS[1] * 3]
    assert_matches_hf(llm.generate(prompts, GREEDY), hf_greedy(tiny_llama3_rope, prompts))


def test_prefix_hits_chunked_prefill_and_preemption_keep_outputs(tiny_qwen2):
    reference = hf_greedy(tiny_qwen2, PROMPTS)
    # prefix hits: the same prompts again find their blocks cached
    llm = LLM(model=str(tiny_qwen2), kv_cache_gib=0.01)
    llm.generate(PROMPTS, GREEDY)
    again = llm.generate(PROMPTS, GREEDY)
    assert_matches_hf(again, reference)
    assert max(o.num_cached_tokens for o in again) >= 16
    # chunked prefill: at most 8 tokens per step
    chunked = LLM(model=str(tiny_qwen2), max_num_batched_tokens=8, max_num_seqs=8)
    assert_matches_hf(chunked.generate(PROMPTS, GREEDY), reference)
    # preemption: a pool of 8 blocks of 16 tokens cannot hold three 60-token sequences
    tight = LLM(model=str(tiny_qwen2), num_gpu_blocks_override=8, max_model_len=128, enable_prefix_caching=False)
    assert_matches_hf(tight.generate(PROMPTS, GREEDY), reference)
    assert tight.engine.core.scheduler.num_preemptions > 0
    assert tight.engine.core.kv_cache.pool.num_free == 8


def test_seeded_sampling_ignores_batch_and_survives_preemption(tiny_llama):
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=1234, max_tokens=30, ignore_eos=True)
    alone = LLM(model=str(tiny_llama), kv_cache_gib=0.01).generate([PROMPTS[0]], params)[0]
    crowd = LLM(model=str(tiny_llama), num_gpu_blocks_override=6, max_model_len=96, enable_prefix_caching=False)
    others = SamplingParams(temperature=1.0, max_tokens=30, ignore_eos=True)
    outs = crowd.generate([PROMPTS[1], PROMPTS[0], PROMPTS[2]], [others, params, others])
    assert outs[1].outputs[0].token_ids == alone.outputs[0].token_ids
    assert crowd.engine.core.scheduler.num_preemptions > 0


def test_unseeded_sampling_varies_and_n_copies_share_the_prompt(tiny_llama):
    llm = LLM(model=str(tiny_llama), kv_cache_gib=0.01)
    prompt = PROMPTS[1] * 2
    [out] = llm.generate([prompt], SamplingParams(n=4, temperature=1.0, max_tokens=12, ignore_eos=True))
    assert [c.index for c in out.outputs] == [0, 1, 2, 3]
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1
    stats = llm.engine.core.kv_cache.stats
    assert stats.hits >= 3 * 16  # copies 1..3 found the prompt's full blocks


def test_stop_strings_max_tokens_and_finish_reasons(tiny_llama):
    llm = LLM(model=str(tiny_llama), kv_cache_gib=0.01)
    full = llm.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))[0].outputs[0]
    assert full.finish_reason == "length" and len(full.token_ids) == 30
    stop = full.text[10:13]  # a stop string from the middle, likely across token boundaries
    cut = llm.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=30, stop=[stop], ignore_eos=True))
    completion = cut[0].outputs[0]
    assert completion.finish_reason == "stop" and completion.stop_reason == stop
    assert completion.text == full.text[: full.text.index(stop)]
    kept = llm.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=30, stop=stop,
                                                     include_stop_str_in_output=True, ignore_eos=True))
    assert kept[0].outputs[0].text == full.text[: full.text.index(stop) + len(stop)]


def test_penalties_change_greedy_output(tiny_qwen3):
    llm = LLM(model=str(tiny_qwen3), kv_cache_gib=0.01)
    base = llm.generate(PROMPTS[:1], SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))[0].outputs[0]
    rep = llm.generate(PROMPTS[:1], SamplingParams(temperature=0, max_tokens=30, ignore_eos=True,
                                                   repetition_penalty=5.0))[0].outputs[0]
    assert len(set(rep.token_ids)) > len(set(base.token_ids))  # the base output loops on few tokens


def test_penalised_rows_scheduled_ahead_match_a_step_by_step_engine_and_transformers(tiny_qwen3):
    """Penalties read every generated id; with the next step scheduled before the last ids reach
    the host, the id still on the device must count too. Mixed batch: penalised and plain rows."""
    settings = [dict(repetition_penalty=1.3), dict(frequency_penalty=0.8), dict(presence_penalty=1.1), {},
                dict(frequency_penalty=0.5, presence_penalty=0.5, repetition_penalty=1.2)]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(settings))]
    params = [SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True, **kw) for kw in settings]
    ahead = LLM(model=str(tiny_qwen3), kv_cache_gib=0.01).generate(prompts, params)
    step_by_step = LLM(model=str(tiny_qwen3), kv_cache_gib=0.01, async_scheduling=False).generate(prompts, params)
    assert [o.outputs[0].token_ids for o in ahead] == [o.outputs[0].token_ids for o in step_by_step]
    assert ahead[1].outputs[0].token_ids != ahead[3].outputs[0].token_ids  # the penalties did something

    tok = AutoTokenizer.from_pretrained(tiny_qwen3)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32)
    ids = tok(prompts[0], return_tensors="pt").input_ids
    reference = model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                               repetition_penalty=1.3)[0, ids.shape[1]:].tolist()
    assert ahead[0].outputs[0].token_ids == reference


def test_token_id_prompts_and_chat(tiny_llama):
    llm = LLM(model=str(tiny_llama), kv_cache_gib=0.01)
    tok = llm.get_tokenizer()
    ids = tok.encode(PROMPTS[0])
    by_text = llm.generate(PROMPTS[0], GREEDY)[0]
    by_ids = llm.generate({"prompt_token_ids": ids}, GREEDY)[0]
    assert by_text.prompt_token_ids == ids and by_ids.outputs[0].token_ids == by_text.outputs[0].token_ids
    chat = llm.chat([{"role": "user", "content": "Hello"}], SamplingParams(temperature=0, max_tokens=5))[0]
    expected = tok.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True, tokenize=False)
    assert tok.decode(chat.prompt_token_ids) == expected


def test_clear_errors(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    llm = LLM(model=str(tiny_llama), kv_cache_gib=0.01, max_model_len=64)
    with pytest.raises(ValueError, match="64"):
        llm.generate({"prompt_token_ids": [5] * 64})
    with pytest.raises(ValueError, match="vocabulary"):
        llm.generate({"prompt_token_ids": [10**6]})
    with pytest.raises(ValueError, match="max_model_len"):
        LLM(model=str(tiny_llama), num_gpu_blocks_override=2, max_model_len=64)
