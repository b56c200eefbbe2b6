"""`kvserve bench offline`: engine throughput and latency on a named workload, in process.

Requests are token ids (random, seeded; or chat prompts through the model's tokenizer
for `copy`) submitted all at once and driven through EngineCore directly: the figures
are the engine's (scheduling, model, sampling), with no HTTP and no detokenization.
`--compare-hf` runs Hugging Face transformers on the same weights and workload in the
same process; `--speculative-config` runs the workload without speculation and then
with it, on the same engine, and checks that the greedy outputs are identical.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workload:
    num_requests: int
    input_len: tuple[int, int]  # inclusive range, uniform
    output_len: tuple[int, int]
    description: str
    prompts: str = "random"  # random token ids; "copy" / "novel": chat prompts of copy_prompts that end at EOS


# The named workloads: the four GPU targets of docs/benchmarks.md (the first is nano-vllm's
# published benchmark shape), then CPU checks.
WORKLOADS: dict[str, Workload] = {
    "throughput": Workload(256, (100, 1024), (100, 1024), "256 requests, in/out uniform in 100..1024"),
    "batch1": Workload(1, (128, 128), (256, 256), "one request, 128 in, 256 out"),
    "batch512": Workload(512, (1000, 1000), (1000, 1000), "512 requests, 1000 in, 1000 out"),
    "prefill8k": Workload(1, (8192, 8192), (1, 1), "one 8,192-token prompt (time to first token)"),
    "smoke": Workload(8, (16, 64), (8, 32), "a few short requests (CPU check)"),
    "cpu": Workload(8, (128, 128), (128, 128), "8 requests, 128 in, 128 out (CPU throughput in a minute)"),
    "copy": Workload(4, (0, 0), (400, 400), "4 chat prompts asking to repeat a list or copy code, up to 400 "
                     "out, EOS ends them (speculation: most proposals accepted)", prompts="copy"),
    "novel": Workload(4, (0, 0), (256, 256), "4 chat prompts asking for a short essay, up to 256 out, "
                      "EOS ends them (speculation: little to copy)", prompts="novel"),
}


@dataclass
class Result:
    workload: str
    num_requests: int
    prompt_tokens: int
    output_tokens: int
    elapsed_s: float
    output_tok_s: float
    total_tok_s: float
    steps: int
    step_ms_mean: float
    step_ms_median: float
    ttft_s_mean: float
    ttft_s_max: float
    num_preemptions: int
    kv_cache_tokens: int  # the KV pool's size
    phases: dict  # "decode" (decode-only steps) and "prefill" (steps with prompt tokens): steps, seconds, tokens
    spec_decode: dict | None = None  # proposals, tokens proposed and accepted during the run (speculation on)


def phase_summary(step_log: list[tuple[int, int, float]], overlapped: bool) -> dict:
    """Split the steps into decode-only ones (one token per request) and the rest.

    `step_log` holds (tokens, requests, seconds) per `EngineCore.step()` call. An overlapped
    call launches its step and then waits for the one before, so its seconds are that step's:
    they are counted there, and a last call that launched nothing is no step of its own.
    """
    phases = {name: {"steps": 0, "seconds": 0.0, "tokens": 0} for name in ("prefill", "decode")}
    names = ["decode" if tokens == seqs else "prefill" for tokens, seqs, _ in step_log]
    for i, (tokens, _, seconds) in enumerate(step_log):
        if tokens:
            phases[names[i]]["steps"] += 1
            phases[names[i]]["tokens"] += tokens
        owner = i - 1 if overlapped and i > 0 else i
        phases[names[owner]]["seconds"] += seconds
    return phases


def make_requests(workload: Workload, vocab_size: int, seed: int, tokenizer=None) -> list[tuple[list[int], int]]:
    """(prompt token ids, output length) per request, reproducible from the seed; a `copy`
    workload needs the model's tokenizer (its chat template)."""
    if workload.prompts != "random":
        return _chat_requests(workload, tokenizer, seed)
    rng = random.Random(seed)
    requests = []
    for _ in range(workload.num_requests):
        n_in = rng.randint(*workload.input_len)
        n_out = rng.randint(*workload.output_len)
        requests.append(([rng.randrange(vocab_size) for _ in range(n_in)], n_out))
    return requests


def _chat_requests(workload: Workload, tokenizer, seed: int) -> list[tuple[list[int], int]]:
    from kvserve.bench.copy_prompts import copy_prompts, novel_prompts
    from kvserve.tokenizer import apply_chat_template

    if tokenizer is None:
        raise SystemExit(f"the {workload.prompts} workload needs the model's tokenizer and chat template")
    texts = {"copy": copy_prompts, "novel": novel_prompts}[workload.prompts](workload.num_requests, seed)
    return [(apply_chat_template(tokenizer, [{"role": "user", "content": text}]), workload.output_len[0])
            for text in texts]


def run_engine(core, requests, name: str, progress: bool, frequency_penalty: float = 0.0,
               ignore_eos: bool = True, token_ids: dict | None = None) -> Result:
    """Run the requests to the end; `token_ids`, if given, receives each request's output ids."""
    from kvserve.engine.request import EngineRequest
    from kvserve.sampling_params import SamplingParams

    preemptions_before = core.stats().num_preemptions
    spec_before = core.stats().spec_decode
    start = time.perf_counter()
    for i, (prompt, n_out) in enumerate(requests):
        params = SamplingParams(temperature=0.0, max_tokens=n_out, ignore_eos=ignore_eos,
                                frequency_penalty=frequency_penalty)
        core.add_request(EngineRequest(f"{name}-{i}", prompt, params))
    total_out = sum(n for _, n in requests)
    bar = _bar(total_out, progress)
    step_log, first_token, produced = [], {}, 0
    while core.has_unfinished_requests():
        t0 = time.perf_counter()
        outputs = core.step()
        now = time.perf_counter()
        stats = core.stats()
        step_log.append((stats.step_num_tokens, stats.step_num_seqs, now - t0))
        new = 0
        for out in outputs:
            first_token.setdefault(out.request_id, now - start)
            new += len(out.new_token_ids)  # several per step with speculation
            if token_ids is not None:
                token_ids.setdefault(out.request_id.rsplit("-", 1)[1], []).extend(out.new_token_ids)
        produced += new
        if bar is not None:
            bar.update(new)
    elapsed = time.perf_counter() - start
    if bar is not None:
        bar.close()
    prompt_tokens = sum(len(p) for p, _ in requests)
    ttfts = list(first_token.values())
    step_times = [seconds for _, _, seconds in step_log]
    return Result(
        workload=name, num_requests=len(requests), prompt_tokens=prompt_tokens, output_tokens=produced,
        elapsed_s=elapsed, output_tok_s=produced / elapsed, total_tok_s=(prompt_tokens + produced) / elapsed,
        steps=len(step_times), step_ms_mean=1000 * statistics.fmean(step_times),
        step_ms_median=1000 * statistics.median(step_times),
        ttft_s_mean=statistics.fmean(ttfts), ttft_s_max=max(ttfts),
        num_preemptions=core.stats().num_preemptions - preemptions_before,
        kv_cache_tokens=core.kv_cache.num_blocks * core.kv_cache.block_size, phases=phase_summary(step_log, core.overlap),
        spec_decode=_spec_figures(spec_before, core.stats().spec_decode),
    )


def _spec_figures(before, after) -> dict | None:
    """The run's share of the engine's cumulative acceptance counters."""
    if after is None or before is None:
        return None
    drafts = after.num_drafts - before.num_drafts
    proposed = after.num_draft_tokens - before.num_draft_tokens
    accepted = after.num_accepted_tokens - before.num_accepted_tokens
    return {"drafts": drafts, "draft_tokens": proposed, "accepted_tokens": accepted,
            "acceptance_rate": accepted / proposed if proposed else 0.0,
            "mean_accepted_per_draft": accepted / drafts if drafts else 0.0}


def build_engine(args: argparse.Namespace):
    """(EngineCore, the temporary shape directory of --arch or None: keep it while the core is used)."""
    from kvserve.config import EngineConfig
    from kvserve.engine.engine_core import EngineCore
    from kvserve.models.shapes import with_shape_dir

    settings = dict(model=args.model, arch=args.arch, dtype=args.dtype, quantization=args.quantization,
                    kv_cache_dtype=args.kv_cache_dtype,
                    max_model_len=args.max_model_len, enforce_eager=args.enforce_eager, threads=args.threads,
                    tensor_parallel_size=getattr(args, "tensor_parallel_size", 1))  # scripts build args too
    if args.max_num_seqs:
        settings["max_num_seqs"] = args.max_num_seqs
    if args.max_num_batched_tokens:
        settings["max_num_batched_tokens"] = args.max_num_batched_tokens
    if args.kv_cache_gib:
        settings["kv_cache_gib"] = args.kv_cache_gib
    if not args.async_scheduling:
        settings["async_scheduling"] = False
    if args.speculative_config:
        settings["speculative_config"] = args.speculative_config
    config, shape_dir = with_shape_dir(EngineConfig.from_flat(**settings))
    try:
        return EngineCore(config), shape_dir
    except BaseException:
        if shape_dir is not None:
            shape_dir.cleanup()
        raise


def run(args: argparse.Namespace) -> int:
    core, shape_dir = build_engine(args)
    try:
        return measure(core, args)
    finally:
        if shape_dir is not None:
            shape_dir.cleanup()


def measure(core, args: argparse.Namespace) -> int:
    """Run the workload (after a warm-up), print and keep the figures; returns the exit code."""
    if args.compare_hf and args.frequency_penalty:
        raise SystemExit("--compare-hf runs transformers greedy without penalties: leave --frequency-penalty out")
    workload = WORKLOADS[args.workload]
    requests = make_requests(workload, core.info.vocab_size, args.seed, _tokenizer(core, workload))
    if args.warmup:
        run_engine(core, make_requests(WORKLOADS["smoke"], core.info.vocab_size, 1), "warmup", False,
                   args.frequency_penalty)
    report = {"device": _device_name(), "workload": asdict(workload), "kv_cache_dtype": core.config.cache.kv_cache_dtype}
    if core.speculator is not None:
        baseline, baseline_ids = _baseline(core, requests, workload, args)
        report["no_speculation"] = asdict(baseline)
    outputs: dict = {}
    result = run_engine(core, requests, args.workload, not args.no_progress, args.frequency_penalty,
                        workload.prompts == "random", outputs)
    report["engine"] = asdict(result)
    _print_result("kvserve", result)
    if core.speculator is not None:
        report["speculation"] = _compare_speculation(baseline, baseline_ids, result, outputs)
    if args.profile:
        from kvserve.bench.gpu_profile import profile_steps

        # fresh prompts: the workload's own would now be prefix-cache hits
        fresh = make_requests(workload, core.info.vocab_size, args.seed + 1)
        report["profile"] = profile_steps(core, fresh[: max(1, len(fresh) // 4)])
        _print_profile(report["profile"])
    if args.compare_hf:
        from kvserve.bench.hf_peer import run_hf

        report["hf"] = run_hf(core, requests, args)
        for name, figures in report["hf"].items():
            window = ""
            if figures.get("requests_finished", figures.get("requests")) != figures.get("requests"):
                window = (f"   (first {figures['elapsed_s']:.1f} s: {figures['output_tokens']} tokens, "
                          f"{figures['requests_finished']}/{figures['requests']} requests finished)")
            ratio = (f"kvserve is {result.output_tok_s / figures['output_tok_s']:.2f}x" if figures["output_tok_s"]
                     else "no tokens within the time limit")
            print(f"{'hf ' + name:<24} {figures['output_tok_s']:>12.1f} tok/s   {ratio}{window}")
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(report, indent=1))
    return 0


def _tokenizer(core, workload: Workload):
    if workload.prompts == "random":
        return None
    from kvserve.tokenizer import load_tokenizer

    return load_tokenizer(core.tokenizer_path)


def _baseline(core, requests, workload: Workload, args: argparse.Namespace) -> tuple[Result, dict]:
    """The workload without speculation on the same engine, and its output ids, after one
    pass that puts every prompt in the prefix cache (so that both measured runs find the
    same cached blocks)."""
    run_engine(core, [(prompt, 1) for prompt, _ in requests], "prime", False)
    outputs: dict = {}
    with core.speculation_paused():
        result = run_engine(core, requests, "no-spec", not args.no_progress, args.frequency_penalty,
                            workload.prompts == "random", outputs)
    _print_result("kvserve, no speculation", result)
    return result, outputs


def _compare_speculation(baseline: Result, baseline_ids: dict, result: Result, outputs: dict) -> dict:
    figures = {"speedup": result.output_tok_s / baseline.output_tok_s,
               "identical_outputs": outputs == baseline_ids, **(result.spec_decode or {})}
    print(f"speculation: {figures['speedup']:.2f}x tokens/s, outputs identical: {figures['identical_outputs']}, "
          f"acceptance {100 * figures.get('acceptance_rate', 0):.1f}% "
          f"({figures.get('accepted_tokens', 0)} of {figures.get('draft_tokens', 0)} proposed tokens), "
          f"{figures.get('mean_accepted_per_draft', 0):.2f} accepted per proposal")
    return figures


def _print_result(name: str, r: Result) -> None:
    print(f"{name:<24} {r.output_tok_s:>12.1f} output tok/s  {r.total_tok_s:>10.1f} total tok/s  "
          f"{r.elapsed_s:8.2f} s  {r.steps} steps  step {r.step_ms_mean:.2f} ms mean / {r.step_ms_median:.2f} median  "
          f"TTFT mean {r.ttft_s_mean:.3f} s max {r.ttft_s_max:.3f} s")
    print(f"  KV pool {r.kv_cache_tokens} tokens, {r.num_preemptions} preemptions")
    for name, p in r.phases.items():
        if p["steps"]:
            print(f"  {name + ' steps':<22} {p['steps']:>6}  {p['seconds']:8.2f} s  "
                  f"{1000 * p['seconds'] / p['steps']:7.2f} ms/step  {p['tokens'] / p['steps']:8.1f} tokens/step")


def _print_profile(profile: dict) -> None:
    print(f"GPU busy {100 * profile['gpu_busy_fraction']:.1f}% of {profile['wall_ms']:.1f} ms; top kernels:")
    for k in profile["top_kernels"]:
        print(f"  {k['share'] * 100:5.1f}%  {k['total_ms']:9.2f} ms  {k['name'][:90]}")


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="tok", desc="bench", file=sys.stderr)


def register(bench_subparsers) -> None:
    p = bench_subparsers.add_parser("offline", help="engine throughput on a named workload, in process")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--arch", help=f"random weights of a named shape ({', '.join(sorted(_shape_names()))}) "
                                    "or of a config.json path")
    src.add_argument("--model", help="a Hugging Face model directory (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--workload", default="throughput", choices=sorted(WORKLOADS),
                   help="; ".join(f"{k}: {w.description}" for k, w in WORKLOADS.items()))
    p.add_argument("--seed", type=int, default=0, help="seed of the random prompts and lengths")
    p.add_argument("--dtype", default="auto", help="weights and activations: auto (bfloat16 on CPUs with bf16 "
                                                   "instructions, else float32; the checkpoint's on a GPU), "
                                                   "float32, bfloat16, float16")
    p.add_argument("--quantization", default=None, choices=["int8", "int4", "fp8"],
                   help="int8 / int4 weights (CPU; int4 also GPU), fp8 weights and activations (GPU)")
    p.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8", "fp8_e4m3"],
                   help="KV cache storage: auto = the model's dtype; fp8 = E4M3, twice the tokens (default: auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the model's math (default: usable cores minus one)")
    p.add_argument("--max-model-len", type=int, default=None, help="context length in tokens (default: the model's)")
    p.add_argument("--max-num-seqs", type=int, default=None, help="requests in one step at most (default: 256)")
    p.add_argument("--max-num-batched-tokens", type=int, default=None,
                   help="tokens (prefill + decode) in one step at most (default: 8192)")
    p.add_argument("--kv-cache-gib", type=float, default=None, help="CPU KV pool size")
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="ranks (GPUs) that split the model")
    p.add_argument("--no-async-scheduling", dest="async_scheduling", action="store_false",
                   help="apply each step's results before scheduling the next (no CPU/GPU overlap)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="measure from the first request (by default a few short requests run first, unmeasured)")
    p.add_argument("--compare-hf", action="store_true", help="also run transformers on the same weights")
    p.add_argument("--speculative-config", default=None, metavar="JSON",
                   help='speculative decoding, e.g. \'{"method": "ngram", "num_speculative_tokens": 4}\': the '
                        "workload runs without it, then with it (same engine), and the outputs are compared")
    p.add_argument("--frequency-penalty", type=float, default=0.0,
                   help="give every request this frequency penalty (penalised sampling reads each row's history)")
    p.add_argument("--hf-time-limit", type=_positive_seconds, default=None, metavar="SECONDS",
                   help="stop transformers' continuous batching after this long and count the tokens it "
                        "generated by then (finished and partial requests)")
    p.add_argument("--profile", action="store_true", help="profile a slice of the workload (GPU busy, top kernels)")
    p.add_argument("--output-json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _shape_names():
    from kvserve.models.shapes import SHAPES

    return SHAPES
