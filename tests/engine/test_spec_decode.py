"""Speculative decoding end to end on tiny models: the output is plain decoding's.

Greedy text and token ids must be identical with and without n-gram speculation, for
copy-heavy prompts (high acceptance) and others, with stop strings, stop tokens,
max_tokens, penalties, logprobs and preemption; sampled output must keep its
distribution (chi-square over the first tokens of many requests).
"""

import math
from collections import Counter

import pytest

from kvserve import LLM, SamplingParams

NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 1}
PROMPTS = [
    "Hello world! Hello world! Hello world!",
    "def add(a, b):\n    return a + b\ndef add(a, b):\n    return",
    "The capital of France is Paris. The capital of Italy is Rome. The capital of France is",
    "0123456789 0123456789 0123456789 01234",
    "Paged attention stores keys and values in blocks of sixteen tokens.",
    "Größe, naïve café, 東京, emoji 🙂",
    "Continuous batching schedules running requests first",
    "a",
]


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_qwen3"])
def engines(request):
    model = str(request.getfixturevalue(request.param))
    plain = LLM(model=model, kv_cache_gib=0.01, max_model_len=256)
    spec = LLM(model=model, kv_cache_gib=0.01, max_model_len=256, speculative_config=NGRAM)
    yield plain, spec
    plain.shutdown()
    spec.shutdown()


def outputs(llm, params, prompts=PROMPTS):
    return [o.outputs[0] for o in llm.generate(prompts, params, use_tqdm=False)]


def same(plain, spec, params, prompts=PROMPTS):
    ref, got = outputs(plain, params, prompts), outputs(spec, params, prompts)
    for r, g in zip(ref, got):
        assert (g.token_ids, g.text, g.finish_reason, g.stop_reason) == (r.token_ids, r.text, r.finish_reason,
                                                                          r.stop_reason)
    return ref


def test_greedy_output_is_identical_and_copying_is_accepted(engines):
    plain, spec = engines
    before = spec.engine.core.stats().spec_decode
    params = SamplingParams(temperature=0, max_tokens=48, ignore_eos=True)
    same(plain, spec, params)
    stats = spec.engine.core.stats().spec_decode
    assert stats.num_accepted_tokens - before.num_accepted_tokens >= 10  # the repetitive prompts are copied
    assert stats.num_accepted_tokens < stats.num_draft_tokens  # and some proposals fail
    # each request's own figures add up to the engine's
    per_request = [o.metrics for o in spec.generate(PROMPTS, params, use_tqdm=False)]
    after = spec.engine.core.stats().spec_decode
    assert sum(m["num_accepted_tokens"] for m in per_request) == after.num_accepted_tokens - stats.num_accepted_tokens
    assert sum(m["num_draft_tokens"] for m in per_request) == after.num_draft_tokens - stats.num_draft_tokens


def test_max_tokens_stop_tokens_and_stop_strings_end_inside_an_accepted_run(engines):
    plain, spec = engines
    greedy = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    ref = outputs(plain, greedy)
    for n in (1, 2, 3, 7, 13):
        same(plain, spec, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True))
    # a stop token and a stop string taken from the middle of each reference output
    for r, prompt in zip(ref, PROMPTS):
        token = r.token_ids[9]
        same(plain, spec, SamplingParams(temperature=0, max_tokens=40, stop_token_ids=[token]), [prompt])
        text = r.text[len(r.text) // 2:][:3]
        if text.strip():
            same(plain, spec, SamplingParams(temperature=0, max_tokens=40, stop=[text]), [prompt])
            same(plain, spec, SamplingParams(temperature=0, max_tokens=40, stop=[text],
                                             include_stop_str_in_output=True), [prompt])


def test_penalties_min_tokens_and_logprobs_match_plain_decoding(engines):
    plain, spec = engines
    params = SamplingParams(temperature=0, max_tokens=32, frequency_penalty=0.3, repetition_penalty=1.2,
                            min_tokens=5, logprobs=3)
    ref, got = outputs(plain, params), outputs(spec, params)
    for r, g in zip(ref, got):
        assert g.token_ids == r.token_ids
        assert len(g.logprobs) == len(r.logprobs) == len(r.token_ids)
        for pr, pg in zip(r.logprobs, g.logprobs):
            assert pr.keys() == pg.keys()
            assert all(math.isclose(pr[t].logprob, pg[t].logprob, abs_tol=1e-4) and pr[t].rank == pg[t].rank
                       for t in pr)


def test_preemption_with_speculation_keeps_the_output(tiny_llama):
    params = SamplingParams(temperature=0, max_tokens=60, ignore_eos=True)
    prompts = PROMPTS * 2
    with LLM(model=str(tiny_llama), max_model_len=256) as plain:
        ref = outputs(plain, params, prompts)
    # 12 blocks of 16 tokens for 16 requests that each grow to ~80 tokens: preemptions
    with LLM(model=str(tiny_llama), max_model_len=128, num_gpu_blocks_override=12,
             speculative_config=NGRAM) as spec:
        got = outputs(spec, params, prompts)
        stats = spec.engine.core.stats()
    assert stats.num_preemptions > 0 and stats.spec_decode.num_accepted_tokens > 0
    assert [g.token_ids for g in got] == [r.token_ids for r in ref]


def test_without_async_scheduling_the_output_is_the_same(tiny_llama):
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    with LLM(model=str(tiny_llama), kv_cache_gib=0.01, max_model_len=256) as plain:
        ref = outputs(plain, params)
    with LLM(model=str(tiny_llama), kv_cache_gib=0.01, max_model_len=256, async_scheduling=False,
             speculative_config=NGRAM) as spec:
        assert [g.token_ids for g in outputs(spec, params)] == [r.token_ids for r in ref]


def _two_sample_chi2(a: Counter, b: Counter) -> tuple[float, int]:
    """Chi-square statistic of homogeneity of two samples, and its degrees of freedom."""
    na, nb = sum(a.values()), sum(b.values())
    stat, cells = 0.0, 0
    for key in set(a) | set(b):
        total = a[key] + b[key]
        ea, eb = total * na / (na + nb), total * nb / (na + nb)
        stat += (a[key] - ea) ** 2 / ea + (b[key] - eb) ** 2 / eb
        cells += 1
    return stat, cells - 1


def test_sampled_output_keeps_its_distribution(tiny_llama):
    # 1,500 requests per engine, temperature 1 within the top 2 tokens: the joint
    # distribution of the first three tokens (8 cells) must agree with and without
    # speculation. The prompt ends in the model's own greedy loops, so that its likely
    # tokens occurred before: proposals are frequent, some accepted, many not.
    params = SamplingParams(temperature=1.0, top_k=2, max_tokens=3, ignore_eos=True)
    settings = dict(model=str(tiny_llama), kv_cache_gib=0.05, max_model_len=128, seed=1, max_waiting=2048)
    with LLM(**settings) as plain:
        base = [40, 41, 42, 43]
        greedy = SamplingParams(temperature=0, max_tokens=60, ignore_eos=True)
        prompt = {"prompt_token_ids": base + outputs(plain, greedy, [{"prompt_token_ids": base}])[0].token_ids}
        samples = [Counter(tuple(o.token_ids) for o in outputs(plain, params, [prompt] * 1500))]
    with LLM(**settings, speculative_config=NGRAM) as spec:
        samples.append(Counter(tuple(o.token_ids) for o in outputs(spec, params, [prompt] * 1500)))
        stats = spec.engine.core.stats().spec_decode
    assert stats.num_accepted_tokens > 200 and stats.num_draft_tokens - stats.num_accepted_tokens > 200
    stat, dof = _two_sample_chi2(*samples)
    z = 3.09  # p = 0.001, Wilson-Hilferty
    assert stat < dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3, (stat, samples)


def test_a_constrained_request_is_not_speculated_and_keeps_its_grammar(engines):
    """Drafts are verified without the grammar's token mask, so a constrained request never
    proposes: its output follows the grammar, and the engine counts no drafts for it."""
    from kvserve.structured.grammars import regex
    from kvserve.structured.spec import StructuredOutputs

    plain, spec = engines
    params = SamplingParams(temperature=0, max_tokens=24, structured=StructuredOutputs(regex(r"(ab){3,8}")))
    before = spec.engine.core.stats().spec_decode.num_drafts
    ref, got = outputs(plain, params, PROMPTS[:2]), outputs(spec, params, PROMPTS[:2])
    assert spec.engine.core.stats().spec_decode.num_drafts == before
    for r, g in zip(ref, got):
        assert g.text == r.text and g.text.replace("ab", "") == "" and 3 <= g.text.count("ab") <= 8
