"""FP8 KV cache on a GPU (compute capability 8.9+): the pool holds twice the tokens, the
Triton kernels (eager and in CUDA graphs) read what the torch path reads, and logits stay
close to the full-precision cache's.

    python -m pytest -m gpu tests/gpu/test_kv_fp8_gpu.py
"""

from __future__ import annotations

import pytest
import torch

from kvserve import LLM, SamplingParams
from tests.worker.test_kv_fp8_engine import PROMPTS, agreement

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

GREEDY = SamplingParams(temperature=0, max_tokens=48, ignore_eos=True)
SMALL = dict(gpu_memory_utilization=0.2, max_model_len=512, max_num_seqs=8)  # few graphs to capture


def _pool_and_logits(model_dir, **settings) -> tuple[int, torch.Tensor]:
    """(KV pool blocks, float32 logits of one 100-odd-token prefill) of an engine."""
    with LLM(model=str(model_dir), enforce_eager=True, **SMALL, **settings) as llm:
        runner = llm.engine.core.runner
        ids = torch.tensor(llm.get_tokenizer().encode(" ".join(PROMPTS) * 2))
        with torch.inference_mode():
            logits = runner.model.compute_logits(runner.prefill_forward(ids, [ids.numel()])).float().cpu()
        return llm.engine.core.kv_cache.num_blocks, logits


def _greedy(model_dir, **settings) -> tuple[list[list[int]], bool]:
    with LLM(model=str(model_dir), dtype="float32", **SMALL, **settings) as llm:
        tokens = [list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, GREEDY, use_tqdm=False)]
        return tokens, llm.engine.core.runner.graphs is not None


def test_pool_doubles_and_logits_stay_close_to_bfloat16(tiny_llama):
    blocks, exact = _pool_and_logits(tiny_llama, dtype="bfloat16")
    fp8_blocks, fp8 = _pool_and_logits(tiny_llama, dtype="bfloat16", kv_cache_dtype="fp8")
    assert abs(fp8_blocks - 2 * blocks) <= 0.01 * blocks  # the same byte budget, half the bytes a token
    cosine = torch.nn.functional.cosine_similarity(exact, fp8, dim=-1)
    print(f"fp8 vs bf16 KV cache: {fp8_blocks} vs {blocks} blocks, logits cosine min {cosine.min():.4f}")
    assert cosine.min() > 0.99


def test_triton_kernels_in_cuda_graphs_read_what_the_torch_path_reads(tiny_llama):
    # both store the same E4M3 bytes and attend in float32: only summation order differs
    by_torch, _ = _greedy(tiny_llama, kv_cache_dtype="fp8", attention_backend="torch", enforce_eager=True)
    by_triton, captured = _greedy(tiny_llama, kv_cache_dtype="fp8", attention_backend="triton")
    assert captured
    share = agreement(by_triton, by_torch)
    print(f"fp8 KV cache, Triton + CUDA graphs vs torch eager: {share:.1%} of greedy tokens agree")
    assert share >= 0.95
