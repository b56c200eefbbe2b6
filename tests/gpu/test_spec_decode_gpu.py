"""Speculative decoding on a GPU: Triton attention over verification steps, CUDA graphs
for the verification steps and the one-token steps in between, the id matrix through
pinned memory, a draft model beside the target (run on the GPU machine: python -m pytest
-m gpu tests/gpu, or scripts/gpu_spec.sh)."""

import pytest
import torch

from kvserve import LLM, SamplingParams
from tests.engine.test_spec_decode import NGRAM, PROMPTS
from tests.engine.test_spec_decode_draft import one_layer_draft  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "cuda-graphs"])
def test_greedy_output_with_speculation_equals_plain_decoding(tiny_model, eager):
    settings = dict(model=str(tiny_model), dtype="float32", enforce_eager=eager, gpu_memory_utilization=0.2,
                    max_model_len=512)
    params = [SamplingParams(temperature=0, max_tokens=64, ignore_eos=True),
              SamplingParams(temperature=0, max_tokens=40, frequency_penalty=0.4, logprobs=2)]
    with LLM(**settings) as plain:
        ref = [[o.outputs[0].token_ids for o in plain.generate(PROMPTS, p, use_tqdm=False)] for p in params]
    with LLM(**settings, speculative_config=NGRAM) as spec:
        got = [[o.outputs[0].token_ids for o in spec.generate(PROMPTS, p, use_tqdm=False)] for p in params]
        stats = spec.engine.core.stats().spec_decode
        runner = spec.engine.core.runner
        assert (runner.graphs is None) == (runner.verify_graphs is None) == eager
        assert eager or runner.verify_graphs.replays > 0  # verification steps replayed a graph
    assert got == ref and stats.num_accepted_tokens > 0


def test_verification_graphs_take_requests_with_different_draft_counts_in_one_step(tiny_llama):
    # 8 prompts in one batch: copy-heavy ones propose 4 drafts, others fewer or none (and
    # back off); every verification step of at most 32 requests replays a graph of decode rows
    settings = dict(model=str(tiny_llama), dtype="float32", gpu_memory_utilization=0.2, max_model_len=512)
    params = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
    with LLM(**settings) as plain:
        ref = [o.outputs[0].token_ids for o in plain.generate(PROMPTS, params, use_tqdm=False)]
    with LLM(**settings, speculative_config=NGRAM) as spec:
        runner = spec.engine.core.runner
        prepare, counts = runner._prepare_inputs, []

        def recording(sched):
            inputs = prepare(sched)
            if inputs.drafts is not None:
                counts.append((inputs.verify_graph_size, sorted(len(d) for d in inputs.drafts)))
            return inputs

        runner._prepare_inputs = recording
        got = [o.outputs[0].token_ids for o in spec.generate(PROMPTS, params, use_tqdm=False)]
        replays = runner.verify_graphs.replays
    assert got == ref
    assert counts and all(size is not None for size, _ in counts)  # no verification step ran eagerly
    assert replays >= len(counts)
    assert any(lens[0] < lens[-1] for _, lens in counts)  # mixed draft counts in one replayed step
    assert any(lens[0] == 0 and len(lens) > 1 for _, lens in counts)  # ... with a request that proposed none


def test_sampled_output_with_speculation_runs_seeded_and_in_range(tiny_llama):
    params = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=48, seed=7, ignore_eos=True)
    with LLM(model=str(tiny_llama), dtype="float32", gpu_memory_utilization=0.2, max_model_len=512,
             speculative_config=NGRAM) as spec:
        first = [o.outputs[0].token_ids for o in spec.generate(PROMPTS, params, use_tqdm=False)]
        again = [o.outputs[0].token_ids for o in spec.generate(PROMPTS, params, use_tqdm=False)]
    assert first == again and all(len(t) == 48 for t in first)


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "cuda-graphs"])
def test_greedy_output_with_a_draft_model_equals_plain_decoding(tiny_model, eager):
    """The target as its own draft: the draft follows the one-token steps that replay the
    target's CUDA graphs (their padding rows cut off) and proposes eagerly; were any of its
    KV missing, it would propose other tokens than the target's argmax."""
    settings = dict(model=str(tiny_model), dtype="float32", enforce_eager=eager, gpu_memory_utilization=0.2,
                    max_model_len=512)
    params = [SamplingParams(temperature=0, max_tokens=64, ignore_eos=True),
              SamplingParams(temperature=0, max_tokens=40, frequency_penalty=0.4, logprobs=2)]
    draft = {"method": "draft_model", "model": str(tiny_model), "num_speculative_tokens": 4,
             "disable_by_batch_size": 4}  # steps without proposals (graph replays) while more run
    with LLM(**settings) as plain:
        ref = [[o.outputs[0].token_ids for o in plain.generate(PROMPTS, p, use_tqdm=False)] for p in params]
    with LLM(**settings, speculative_config=draft) as spec:
        got = [[o.outputs[0].token_ids for o in spec.generate(PROMPTS, p, use_tqdm=False)] for p in params]
        stats = spec.engine.core.stats().spec_decode
        assert (spec.engine.core.runner.graphs is None) == eager
    assert got == ref
    assert stats.num_draft_tokens > 100 and stats.num_accepted_tokens >= 0.95 * stats.num_draft_tokens


def test_a_weaker_draft_model_keeps_greedy_output_and_seeded_sampling_on_the_gpu(tiny_llama, one_layer_draft):
    settings = dict(model=str(tiny_llama), dtype="float32", gpu_memory_utilization=0.2, max_model_len=512)
    greedy = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
    sampled = SamplingParams(temperature=1.0, top_k=2, max_tokens=48, seed=7, ignore_eos=True)
    with LLM(**settings) as plain:
        ref = [o.outputs[0].token_ids for o in plain.generate(PROMPTS, greedy, use_tqdm=False)]
    draft = {"method": "draft_model", "model": str(one_layer_draft), "num_speculative_tokens": 3}
    with LLM(**settings, speculative_config=draft) as spec:
        got = [o.outputs[0].token_ids for o in spec.generate(PROMPTS, greedy, use_tqdm=False)]
        first = [o.outputs[0].token_ids for o in spec.generate(PROMPTS, sampled, use_tqdm=False)]
        again = [o.outputs[0].token_ids for o in spec.generate(PROMPTS, sampled, use_tqdm=False)]
        stats = spec.engine.core.stats().spec_decode
    assert got == ref and first == again and stats.num_accepted_tokens > 0
