"""The parity matrix: model shapes our families allow, each checked against transformers.

One case per shape, chosen so that together they cover head sizes 32, 64, 80, 96, 100,
128 and 256 (80, 96 and 100 are not powers of two: the Triton kernels pad and mask them),
MHA, GQA and MQA, Qwen2's qkv bias, tied and untied embeddings, Llama 3 rope scaling and
block sizes 16 and 32. `check_case` runs one engine through chunked prefill, a pool too
small for the batch (preemption) and a re-run of the same prompts (prefix-cache hits),
and asserts float32 greedy tokens equal to transformers'. The CPU suite runs every case
(tests/models/test_parity_matrix.py); the GPU suite runs them eager and with CUDA graphs,
all in one process, plus bfloat16 logits (tests/gpu/test_parity_matrix_gpu.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kvserve import LLM, SamplingParams
from tests.conftest import build_model
from tests.entrypoints.test_llm import PROMPTS, assert_matches_hf, hf_greedy

NEW_TOKENS = 24
GREEDY = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=3)
POOL_TOKENS = 128  # the three prompts and their answers need more: preemption
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}


@dataclass(frozen=True)
class Case:
    name: str
    arch: str  # llama | qwen2 | qwen3 (tests/conftest.py build_model)
    overrides: dict = field(default_factory=dict)
    block_size: int = 16

    @property
    def head_dim(self) -> int:
        o = self.overrides
        return o.get("head_dim") or o["hidden_size"] // o["num_attention_heads"]


def _shape(hidden: int, heads: int, kv_heads: int, **extra) -> dict:
    return {"hidden_size": hidden, "num_attention_heads": heads, "num_key_value_heads": kv_heads, **extra}


CASES = [
    Case("llama-h32-mha", "llama", _shape(128, 4, 4)),
    Case("llama-h64-gqa-b32", "llama", _shape(384, 6, 2), block_size=32),
    Case("llama-h80-gqa", "llama", _shape(320, 4, 2)),
    Case("llama-h100-mha", "llama", _shape(400, 4, 4)),  # OpenLLaMA-3B's head size
    Case("llama3rope-h64-mqa", "llama", _shape(256, 4, 1, rope_scaling=LLAMA3_ROPE, rope_theta=500000.0)),
    Case("qwen2-bias-h128-mqa-tied", "qwen2", _shape(256, 2, 1, tie_word_embeddings=True)),
    Case("qwen3-h96-gqa-b32", "qwen3", _shape(128, 4, 2, head_dim=96), block_size=32),
    Case("qwen3-h256-mha-tied", "qwen3", _shape(128, 2, 2, head_dim=256, tie_word_embeddings=True)),
]


def build_case(case: Case, out_dir: Path) -> Path:
    return build_model(case.arch, out_dir, **case.overrides)


def check_case(model_dir: Path, case: Case, reference, **engine_kwargs) -> LLM:
    """Chunked prefill + preemption, then the same prompts again (prefix hits): both runs
    give transformers' greedy tokens. Returns the engine (the caller frees it)."""
    llm = LLM(model=str(model_dir), dtype="float32", block_size=case.block_size, max_num_batched_tokens=16,
              max_num_seqs=8, num_gpu_blocks_override=POOL_TOKENS // case.block_size, max_model_len=POOL_TOKENS,
              **engine_kwargs)
    assert_matches_hf(llm.generate(PROMPTS, GREEDY), reference)
    assert llm.engine.core.scheduler.num_preemptions > 0, "the pool was meant to be too small for the batch"
    again = llm.generate(PROMPTS, GREEDY)
    assert_matches_hf(again, reference)
    assert sum(o.num_cached_tokens for o in again) > 0, "the re-run was meant to find cached blocks"
    return llm


def reference_tokens(model_dir: Path):
    """transformers' greedy run; an argmax EOS is kept, as the engine's ignore_eos keeps it."""
    return hf_greedy(model_dir, PROMPTS, max_new_tokens=NEW_TOKENS, eos_may_win=True)
