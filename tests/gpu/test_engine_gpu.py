"""GPU checks of the whole engine (run on the GPU machine: python -m pytest -m gpu tests/gpu)."""

import pytest
import torch

from kvserve import LLM, SamplingParams
from tests.entrypoints.test_llm import GREEDY, PROMPTS, assert_matches_hf, hf_greedy

# the tiny fixtures have head_dim 16 (llama, qwen2) and 32 (qwen3): powers of two, which the
# Triton kernels take; larger head dims are checked kernel by kernel in scripts/gpu_check.py

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "cuda-graphs"])
def test_float32_greedy_equals_transformers(tiny_model, eager):
    llm = LLM(model=str(tiny_model), dtype="float32", enforce_eager=eager, gpu_memory_utilization=0.3,
              max_model_len=512)
    assert llm.engine.core.runner.graphs is None if eager else llm.engine.core.runner.graphs is not None
    assert_matches_hf(llm.generate(PROMPTS, GREEDY), hf_greedy(tiny_model, PROMPTS))


def test_chunked_prefill_prefix_hits_and_preemption_on_gpu(tiny_qwen3):
    reference = hf_greedy(tiny_qwen3, PROMPTS)
    llm = LLM(model=str(tiny_qwen3), dtype="float32", max_num_batched_tokens=8, num_gpu_blocks_override=8,
              max_model_len=128)
    assert_matches_hf(llm.generate(PROMPTS, GREEDY), reference)
    assert_matches_hf(llm.generate(PROMPTS, GREEDY), reference)
    assert llm.engine.core.scheduler.num_preemptions > 0
