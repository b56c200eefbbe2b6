"""Decode steps replayed from graphs that hold the LM head and the greedy argmax, on the CPU:
what a replay computes is run eagerly from the same device buffers (capture and replay
need a GPU: tests/gpu). Greedy rows take the graph's ids without the sampler; every other
row (temperature, logprobs, penalties) still goes through it, from the graph's logits, and
the output is what the eager runner gives, token for token."""

import pytest
import torch

from kvserve import LLM, SamplingParams
from kvserve.attention.backend import AttentionMetadata
from kvserve.worker.cuda_graphs import DecodeGraphs, DecodeOutputs, batch_size_ladder, decode_forward

PROMPTS = ["The quick brown fox", "Once upon a time", "def fib(n):", "1, 2, 3, 4,"]


class EagerDecode(DecodeGraphs):
    """A replay run eagerly over the step's real rows, read from the runner's device buffers."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.replays = 0

    def replay(self, batch: int, size: int) -> DecodeOutputs:
        self.replays += 1
        dev = self.buffers.dev
        lens = dev["seq_lens"][:batch]
        meta = AttentionMetadata(dev["slot_mapping"][:batch], self.row_starts[: batch + 1], lens,
                                 dev["block_tables"][:batch], [1] * batch, lens.tolist(), 1, int(lens.max()))
        args = (dev["input_ids"][:batch], dev["positions"][:batch], self.kv_caches, meta)
        return decode_forward(self.model, args, size <= self.logits_rows)


def generate(llm: LLM, params: list[SamplingParams]):
    return [o.outputs[0] for o in llm.generate(PROMPTS, params, use_tqdm=False)]


@pytest.fixture(scope="module")
def llms(tiny_llama):
    settings = dict(model=str(tiny_llama), kv_cache_gib=0.01, max_model_len=256, max_num_seqs=8)
    with LLM(**settings) as eager, LLM(**settings) as graphed:
        runner = graphed.engine.core.runner
        runner.graphs = EagerDecode(runner.model, runner.kv_caches, runner.buffers, 8, 256)
        yield eager, graphed


def count_sampler_calls(llm: LLM) -> list[int]:
    """Wrap the runner's sampler (an instance attribute, gone with the engine) with a counter."""
    sampler, calls = llm.engine.core.runner.sampler, [0]
    sample = sampler.sample

    def counted(*args, **kwargs):
        calls[0] += 1
        return sample(*args, **kwargs)

    sampler.sample = counted
    return calls


def test_small_graphs_hold_the_lm_head_and_large_ones_do_not():
    graphs = DecodeGraphs(None, [], None, 1024, 256)
    assert [s for s in graphs.sizes if s <= graphs.logits_rows] == [s for s in batch_size_ladder(1024) if s <= 32]
    assert graphs.logits_rows == 32


def test_greedy_decode_takes_the_graphs_ids_and_matches_the_eager_runner(llms):
    eager, graphed = llms
    greedy = [SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)] * len(PROMPTS)
    ref = generate(eager, greedy)
    calls, replays_before = count_sampler_calls(graphed), graphed.engine.core.runner.graphs.replays
    got = generate(graphed, greedy)
    assert [o.token_ids for o in got] == [o.token_ids for o in ref]
    assert graphed.engine.core.runner.graphs.replays - replays_before >= 20  # decode steps replayed
    assert calls[0] <= 2  # only the prompt steps sampled outside the graph


def test_rows_with_settings_sample_from_the_graphs_logits_as_the_eager_runner_does(llms):
    eager, graphed = llms
    mixed = [SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, logprobs=3),
             SamplingParams(temperature=0.8, top_p=0.9, seed=7, max_tokens=16, ignore_eos=True),
             SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, repetition_penalty=1.5),
             SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)]
    ref = generate(eager, mixed)
    calls = count_sampler_calls(graphed)
    got = generate(graphed, mixed)
    assert [o.token_ids for o in got] == [o.token_ids for o in ref]
    for g, r in zip(got[0].logprobs, ref[0].logprobs):
        assert g.keys() == r.keys()
        assert all(abs(g[t].logprob - r[t].logprob) < 1e-5 for t in g)
    assert calls[0] >= 15  # every step went through the sampler
