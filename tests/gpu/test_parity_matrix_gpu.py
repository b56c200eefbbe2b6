"""The parity matrix on a GPU, every case one after another in one process (what catches
state that one engine leaves behind for the next), and engines' lifecycles on the device.

    python -m pytest -m gpu tests/gpu/test_parity_matrix_gpu.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from kvserve import LLM, SamplingParams
from kvserve.config import ConfigError
from tests.entrypoints.test_llm import PROMPTS
from tests.models.parity import CASES, build_case, check_case, reference_tokens

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

BF16_LOGPROB_TOL = 0.1  # nats, on the first token's top-5 logprobs (both sides bfloat16)
SHARE = 0.05  # each engine's gpu_memory_utilization: several fit at once


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    return {case.name: build_case(case, root / case.name) for case in CASES}


def allocated() -> int:
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_float32_eager_and_cuda_graphs_match_transformers(case, models):
    reference = reference_tokens(models[case.name])
    for eager in (True, False):
        baseline = allocated()
        llm = check_case(models[case.name], case, reference, enforce_eager=eager, gpu_memory_utilization=SHARE)
        assert (llm.engine.core.runner.graphs is None) == eager
        del llm
        assert allocated() == baseline, "the engine left memory behind"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bfloat16_logprobs_within_tolerance_of_transformers(case, models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = models[case.name]
    tok = AutoTokenizer.from_pretrained(model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda()
    with LLM(model=str(model_dir), dtype="bfloat16", block_size=case.block_size, gpu_memory_utilization=SHARE,
             max_model_len=512, max_num_seqs=8) as llm:
        outs = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=1, logprobs=5))
    worst = 0.0
    for prompt, out in zip(PROMPTS, outs):
        with torch.no_grad():
            ref = torch.log_softmax(hf(tok(prompt, return_tensors="pt").input_ids.cuda()).logits[0, -1].float(), -1)
        for token, lp in out.outputs[0].logprobs[0].items():
            worst = max(worst, abs(lp.logprob - ref[token].item()))
    _record("bf16_worst_logprob_diff", case.name, worst)
    assert worst <= BF16_LOGPROB_TOL


def test_engines_one_after_another_of_other_shapes(models):
    # the report: head 64 GQA, then head 32 MHA, in one process
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    for name in ("llama-h64-gqa-b32", "llama-h32-mha", "qwen3-h96-gqa-b32", "llama-h64-gqa-b32"):
        with LLM(model=str(models[name]), dtype="float32", gpu_memory_utilization=SHARE, max_model_len=512) as llm:
            assert len(llm.generate(PROMPTS, params)[0].outputs[0].token_ids) == 16


def test_two_engines_alive_at_once_each_with_its_share(models):
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    a = LLM(model=str(models["llama-h64-gqa-b32"]), dtype="float32", gpu_memory_utilization=0.3, max_model_len=512)
    b = LLM(model=str(models["llama-h80-gqa"]), dtype="float32", gpu_memory_utilization=0.3, max_model_len=512)
    alone = a.generate(PROMPTS, params)
    assert [o.outputs[0].token_ids for o in a.generate(PROMPTS, params)] == [o.outputs[0].token_ids for o in alone]
    assert len(b.generate(PROMPTS, params)[0].outputs[0].token_ids) == 16
    a.shutdown()
    b.shutdown()


def test_ten_engines_in_a_loop_return_memory_to_baseline(models):
    # the default path: budget from a profile run, warm-up, decode CUDA graphs
    path = str(models["llama-h80-gqa"])
    with LLM(model=path, gpu_memory_utilization=SHARE, max_model_len=512, max_num_seqs=32):
        pass  # a first engine creates what outlives engines by design (CUDA context, compiled kernels)
    baseline, levels = allocated(), []
    for _ in range(10):
        llm = LLM(model=path, gpu_memory_utilization=SHARE, max_model_len=512, max_num_seqs=32)
        llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=8))
        del llm
        levels.append(allocated())
    _record("loop_allocated_after_each", "llama-h80-gqa", [level - baseline for level in levels])
    assert levels == [baseline] * 10


def test_share_the_device_cannot_give_is_refused_with_the_numbers(models):
    free, total = torch.cuda.mem_get_info()
    hog = torch.empty(int(free * 0.7), dtype=torch.uint8, device="cuda")  # as another engine would hold
    with pytest.raises(ConfigError, match=r"asks for .* GiB, but only .* GiB are free.*at most 0\.\d\d"):
        LLM(model=str(models["llama-h32-mha"]), gpu_memory_utilization=0.5)
    del hog


def test_model_larger_than_its_share_is_refused_before_loading():
    # 16 GB of Llama-3-8B weights in 5% of the GPU: refused before any weight is made (`kvserve
    # serve` prints the message and exits 1, as for every start-up error: tests/server/test_lifecycle.py)
    baseline = allocated()
    with pytest.raises(ConfigError, match=r"the model's weights need 1[45]\.\d\d GiB.*gpu_memory_utilization=0\.05"):
        LLM(arch="llama3-8b", gpu_memory_utilization=0.05)
    assert allocated() == baseline


def _record(metric: str, name: str, value) -> None:
    """Figures for the run's notes: $OUT/parity.json on the GPU machine."""
    out = Path(os.environ.get("OUT", "bench-results")) / "parity.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(out.read_text()) if out.exists() else {}
    data.setdefault(metric, {})[name] = value
    out.write_text(json.dumps(data, indent=1))
