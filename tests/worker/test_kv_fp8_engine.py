"""An engine on an FP8 KV cache, on the CPU (torch backend): the pool holds twice the
tokens of bfloat16, greedy output stays close to the float32 cache's, prefix hits still
reuse blocks, and the setting is checked where it is given."""

from __future__ import annotations

import json

import pytest
import torch

from kvserve import LLM, SamplingParams
from kvserve.cli.main import main
from kvserve.config import ConfigError, EngineConfig

PROMPTS = [
    "The capital of France is",
    "Hello world! How are you today? I am fine, thank you. Continuous batching schedules",
    "def add(a, b):\n    return a",
    "Once upon a time there was a paged cache that held",
]
NEW_TOKENS = 40  # crosses several 16-token blocks
GREEDY = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)


def agreement(tokens: list[list[int]], reference: list[list[int]]) -> float:
    """Share of generated tokens before each output's first difference from the reference."""
    same = sum(next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(want))
               for got, want in zip(tokens, reference))
    return same / sum(len(want) for want in reference)


def test_bench_offline_reports_twice_the_kv_pool_tokens_with_fp8(tiny_llama, tmp_path, capsys):
    pools = {}
    for kv in ("auto", "fp8"):
        out = tmp_path / f"{kv}.json"
        code = main(["bench", "offline", "--model", str(tiny_llama), "--workload", "smoke", "--dtype", "bfloat16",
                     "--kv-cache-gib", "0.01", "--kv-cache-dtype", kv, "--no-warmup", "--no-progress",
                     "--output-json", str(out)])
        assert code == 0, capsys.readouterr().out
        report = json.loads(out.read_text())
        assert report["kv_cache_dtype"] == kv and report["engine"]["output_tokens"] > 0
        pools[kv] = report["engine"]["kv_cache_tokens"]
    assert pools["fp8"] == 2 * pools["auto"]


def test_the_pool_stores_one_byte_an_element(tiny_llama):
    with LLM(model=str(tiny_llama), kv_cache_gib=0.01, dtype="bfloat16", kv_cache_dtype="fp8_e4m3") as llm:
        caches = llm.engine.core.runner.kv_caches
        num_blocks = llm.engine.core.kv_cache.num_blocks
    assert {c.dtype for c in caches} == {torch.float8_e4m3fn}
    assert sum(c.numel() * c.element_size() for c in caches) <= 0.01 * 2**30
    assert caches[0].shape[1] == num_blocks


def logits_and_greedy(model_dir, **settings) -> tuple[torch.Tensor, list[list[int]]]:
    """Float32 logits [T, vocab] of the prompts joined, teacher-forced in one prefill (whose
    attention reads the keys and values back from the cache, so an FP8 cache shows), and
    the greedy tokens of each prompt."""
    with LLM(model=str(model_dir), kv_cache_gib=0.01, **settings) as llm:
        runner = llm.engine.core.runner
        ids = torch.tensor(llm.get_tokenizer().encode(" ".join(PROMPTS) * 2))  # 120-odd tokens
        with torch.inference_mode():
            logits = runner.model.compute_logits(runner.prefill_forward(ids, [ids.numel()])).float()
        tokens = [list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, GREEDY, use_tqdm=False)]
    return logits, tokens


def test_logits_stay_close_to_the_float32_cache_and_greedy_agreement_is_reported(tiny_llama, capsys):
    exact, reference = logits_and_greedy(tiny_llama, dtype="float32")
    fp8, tokens = logits_and_greedy(tiny_llama, dtype="float32", kv_cache_dtype="fp8")
    cosine = torch.nn.functional.cosine_similarity(exact, fp8, dim=-1)
    same_argmax = (exact.argmax(-1) == fp8.argmax(-1)).float().mean().item()
    # free-running greedy diverges at the first near-tie and never comes back: on random
    # tiny weights (flat logits) that comes early, so it is reported, not asserted
    share = agreement(tokens, reference)
    with capsys.disabled():
        print(f"\nfp8 KV cache vs float32 (tiny llama): logits cosine min {cosine.min():.4f}, teacher-forced "
              f"argmax agreement {same_argmax:.1%}, greedy tokens before the first difference {share:.1%}")
    assert cosine.min() > 0.99 and same_argmax >= 0.9  # measured 0.997 and 96%
    assert cosine.min() < 1.0  # the cache did quantize


def test_prefix_hits_read_the_fp8_blocks_they_reuse(tiny_qwen2):
    prompt = PROMPTS[1] * 2  # several full blocks
    with LLM(model=str(tiny_qwen2), kv_cache_gib=0.01, dtype="float32", kv_cache_dtype="fp8") as llm:
        first, again = (llm.generate([prompt], GREEDY, use_tqdm=False)[0] for _ in range(2))
    assert first.num_cached_tokens == 0 and again.num_cached_tokens >= 16
    assert again.outputs[0].token_ids == first.outputs[0].token_ids


def test_unknown_kv_cache_dtype_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match=r"kv_cache_dtype must be one of \('auto', 'fp8', 'fp8_e4m3'\)"):
        EngineConfig.from_flat(kv_cache_dtype="int8")


def test_serve_has_the_flag(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--kv-cache-dtype" in capsys.readouterr().out


def test_each_layer_gets_scales_that_fill_the_e4m3_range(tiny_qwen3):
    with LLM(model=str(tiny_qwen3), kv_cache_gib=0.01, dtype="float32", kv_cache_dtype="fp8") as llm:
        llm.generate(PROMPTS, GREEDY, use_tqdm=False)
        runner = llm.engine.core.runner
        layers = [m for m in runner.model.modules() if hasattr(m, "layer_idx") and hasattr(m, "backend")]
        backends = {m.layer_idx: m.backend for m in layers}
        stored = [c.float().abs().amax(dim=(1, 2, 3, 4)) for c in runner.kv_caches]  # [2] per layer: K, V
    assert len(runner.kv_scales) == len(stored) == len(backends)
    assert [backends[i].kv_scales for i in sorted(backends)] == runner.kv_scales  # each layer its own
    assert len({s.k for s in runner.kv_scales} | {s.v for s in runner.kv_scales}) == 2 * len(runner.kv_scales)
    # the largest stored value sits near 448 / HEADROOM (calibration ids are not these prompts');
    # with a scale of 1.0 these tiny layers' values would stay below 8
    for k_max, v_max in stored:
        assert 448 / 16 < k_max <= 448 and 448 / 16 < v_max <= 448
