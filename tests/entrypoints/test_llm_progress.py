"""What `LLM` shows and how it uses the CPU: loading and generation progress bars (as
vLLM's), the model's sampling defaults, and the --threads setting."""

from __future__ import annotations

import json
import os
import shutil

import torch

from kvserve import LLM, SamplingParams


def test_loading_and_generating_show_progress_bars_by_default(tiny_llama, capfd):
    llm = LLM(model=str(tiny_llama), kv_cache_gib=0.01)
    assert "loading weights" in capfd.readouterr().err
    llm.generate(["a", "b", "c"], SamplingParams(max_tokens=2))
    err = capfd.readouterr().err
    assert "generate: 100%" in err and "3/3" in err
    llm.generate(["a"], SamplingParams(max_tokens=2), use_tqdm=False)
    assert "generate" not in capfd.readouterr().err


def test_no_sampling_params_means_the_models_defaults(tiny_llama, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    (model / "generation_config.json").write_text(json.dumps({"temperature": 0.0, "top_k": 7}))
    llm = LLM(model=str(model), kv_cache_gib=0.01)
    assert (llm.get_default_sampling_params().temperature, llm.get_default_sampling_params().top_k) == (0.0, 7)
    default = llm.generate("The capital", use_tqdm=False)[0].outputs[0].token_ids
    greedy = llm.generate("The capital", SamplingParams(temperature=0, max_tokens=16), use_tqdm=False)
    assert default == greedy[0].outputs[0].token_ids


def test_threads_sets_the_engines_cpu_threads(tiny_llama):
    before = torch.get_num_threads()
    try:
        LLM(model=str(tiny_llama), kv_cache_gib=0.01, threads=2)
        assert torch.get_num_threads() == 2
        LLM(model=str(tiny_llama), kv_cache_gib=0.01)  # default: the usable cores but one
        assert torch.get_num_threads() == max(1, len(os.sched_getaffinity(0)) - 1)
    finally:
        torch.set_num_threads(before)
