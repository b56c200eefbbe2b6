"""The Hugging Face transformers peer for `kvserve bench offline --compare-hf`.

Runs transformers on the very weights the engine used (copied under their HF names
through hf_state_dict) and the same requests, in the same process, after freeing the engine's
KV cache. Batch-1 workloads use `generate` (eager, then the static-cache compiled path
after a warm-up); multi-request workloads use continuous batching (`generate_batch`'s
manager, set up as `generate_batch` does where transformers allows, so that each
request keeps its own output length); a 1-token workload times
one prefill forward (time to first token).
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import time

import torch

from kvserve.models.loader import hf_state_dict


def build_hf_model(core):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(core.model_dir)
    ours = core.runner.model
    dtype = next(ours.parameters()).dtype
    core.runner.kv_caches = []  # the engine's pool would leave no room for a second model
    torch.cuda.empty_cache()
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").to(ours_device(ours))
    missing, unexpected = model.load_state_dict(hf_state_dict(ours), strict=False)
    real_missing = [m for m in missing if not m.endswith("inv_freq") and m != "lm_head.weight"]
    if real_missing or unexpected:
        raise RuntimeError(f"weights do not map onto transformers: missing {real_missing[:3]}, unexpected {unexpected[:3]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config.eos_token_id = None  # ignore_eos, as the engine ran
    model.generation_config.pad_token_id = 0
    return model.eval()


def ours_device(model) -> torch.device:
    return next(model.parameters()).device


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.inference_mode()
def time_generate(model, prompt: list[int], n_out: int, **kwargs) -> float:
    ids = torch.tensor([prompt], device=model.device)
    _sync()
    start = time.perf_counter()
    model.generate(ids, max_new_tokens=n_out, min_new_tokens=n_out, do_sample=False, **kwargs)
    _sync()
    return time.perf_counter() - start


@torch.inference_mode()
def time_prefill(model, prompt: list[int]) -> float:
    ids = torch.tensor([prompt], device=model.device)
    model(ids[:, :128])  # warm-up
    _sync()
    start = time.perf_counter()
    model(ids, logits_to_keep=1)
    _sync()
    return time.perf_counter() - start


def time_continuous_batching(model, requests) -> tuple[float, int]:
    """transformers continuous batching on the workload, each request with its own output
    length; timed from the first request added to the last result (warm-up excluded)."""
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=False, max_new_tokens=max(n for _, n in requests), eos_token_id=None,
                              pad_token_id=0)
    with _batching_manager(model, config, requests) as manager:
        start = time.perf_counter()
        for i, (prompt, n_out) in enumerate(requests):
            manager.add_request(prompt, request_id=f"r{i}", max_new_tokens=n_out)
        produced, done = 0, 0
        while done < len(requests):
            result = manager.get_result(timeout=60)
            if result is None:
                raise RuntimeError("transformers continuous batching produced nothing for 60 s")
            if result.is_finished():
                done += 1
                produced += len(result.generated_tokens)
                if done % 32 == 0:  # a run cut short by a time limit still says how fast it went
                    elapsed = time.perf_counter() - start
                    print(f"hf generate_batch: {done}/{len(requests)} requests, {produced} tokens in {elapsed:.1f} s "
                          f"({produced / elapsed:.1f} tok/s so far)", file=sys.stderr, flush=True)
        elapsed = time.perf_counter() - start
    return elapsed, produced


@contextlib.contextmanager
def _batching_manager(model, config, requests):
    """The manager as `generate_batch` sets it up — sized from workload hints and warmed up
    (CUDA graphs) — where this transformers version has those; else a plain one."""
    from transformers.generation.continuous_batching import continuous_api

    hints_type = getattr(continuous_api, "WorkloadHints", None)
    session = getattr(model, "continuous_batching_context_manager", None)
    if hints_type is not None and session is not None and "workload_hints" in inspect.signature(session).parameters:
        hints = hints_type(max_prompt_length=max(len(p) for p, _ in requests),
                           max_generated_length=max(n for _, n in requests), num_requests=len(requests))
        with session(generation_config=config, block=True, timeout=5, warmup=True, workload_hints=hints) as manager:
            yield manager
        return
    manager = model.init_continuous_batching(generation_config=config)
    manager.start()
    try:
        yield manager
    finally:
        manager.stop(block=True)


def run_hf(core, requests, args) -> dict:
    model = build_hf_model(core)
    results = {}
    if len(requests) == 1 and requests[0][1] == 1:
        elapsed = time_prefill(model, requests[0][0])
        return {"prefill (sdpa)": {"elapsed_s": elapsed, "output_tok_s": 1 / elapsed, "ttft_s": elapsed}}
    if len(requests) == 1:
        prompt, n_out = requests[0]
        elapsed = time_generate(model, prompt, n_out)
        results["generate"] = {"elapsed_s": elapsed, "output_tok_s": n_out / elapsed}
        time_generate(model, prompt, n_out, cache_implementation="static")  # compile + warm-up
        elapsed = time_generate(model, prompt, n_out, cache_implementation="static")
        results["generate static"] = {"elapsed_s": elapsed, "output_tok_s": n_out / elapsed}
        return results
    elapsed, produced = time_continuous_batching(model, requests)
    results["generate_batch"] = {"elapsed_s": elapsed, "output_tok_s": produced / elapsed, "output_tokens": produced}
    return results
