"""The model runner's lifecycle on the CPU: the start-up profile run and teardown."""

import gc
import weakref

import pytest

from kvserve import LLM, SamplingParams


def test_profile_run_keeps_positions_inside_the_model(tiny_llama):
    # the budget's dummy step is max_num_batched_tokens long; packed as one sequence its
    # positions ran past the rotary table (512 here) and read out of bounds on the GPU
    llm = LLM(model=str(tiny_llama), kv_cache_gib=0.01, max_model_len=512)
    runner = llm.engine.core.runner
    seen = []
    hook = runner.model.register_forward_pre_hook(lambda _, args: seen.append((args[1].max().item(), args[3])))
    runner._profile_run(1300, 512)
    hook.remove()
    (max_position, meta), = seen
    assert max_position == 511
    assert meta.query_lens_cpu == [512, 512, 276] and meta.seq_lens_cpu == [512, 512, 276]


def test_del_frees_the_engine_at_once(tiny_llama):
    llm = LLM(model=str(tiny_llama), kv_cache_gib=0.01)
    llm.generate("Hello", SamplingParams(max_tokens=4))
    runner = llm.engine.core.runner
    held = [weakref.ref(t) for t in (runner.kv_caches[0], next(runner.model.parameters()),
                                     runner.buffers.dev["input_ids"])]
    del llm, runner
    gc.disable()  # no collection may be needed: `del` alone frees the tensors
    try:
        assert [ref() for ref in held] == [None] * len(held)
    finally:
        gc.enable()


def test_shutdown_and_context_manager(tiny_llama):
    with LLM(model=str(tiny_llama), kv_cache_gib=0.01) as llm:
        assert llm.generate("Hello", SamplingParams(max_tokens=3))[0].outputs[0].token_ids
    assert llm.engine.core.runner.kv_caches == [] and llm.engine.core.runner.model is None
    llm.shutdown()  # idempotent
    with pytest.raises(RuntimeError, match="shut down"):
        llm.generate("Hello")


def test_context_the_pool_cannot_hold_is_refused_with_the_numbers(tiny_llama):
    from kvserve.config import ConfigError

    with pytest.raises(ConfigError, match=r"holds \d+ tokens .* less than max_model_len=512: lower --max-model-len"):
        LLM(model=str(tiny_llama), kv_cache_gib=0.0001, max_model_len=512)
