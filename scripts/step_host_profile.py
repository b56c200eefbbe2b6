"""Host time of a batch-1 decode step, phase by phase, on the CPU or a GPU.

    python3 scripts/step_host_profile.py                        # CPU: a tiny Qwen3 shape
    python3 scripts/step_host_profile.py --arch qwen3-0.6b --gpu-profile   # GPU: the issue-18 target

One engine on random weights (`--arch`: a named shape, a config.json, or `tiny`), one greedy
request (`--prompt-len` in, `--tokens` out, EOS ignored) run as `kvserve bench offline` runs
it (EngineCore.step in a loop). Prints tok/s and ms per step of the best of `--rounds` plain
runs, then `--rounds` runs with each phase of EngineCore.step timed (kvserve.bench.step_phases):
µs per step of schedule, input preparation, forward (on a GPU: the graph replay's launch),
logits, sampling, launch, waiting for the ids, output processing and the loop's own work
(`other`), each phase's least over the rounds (the step's too); on the CPU the timer is the
thread's CPU time, so that other processes on a shared host do not inflate it. With `--gpu-profile`, a
last run under torch.profiler gives the GPU busy fraction, kernels per token and the top kernels.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kvserve.bench.offline import build_engine, run_engine  # noqa: E402
from kvserve.bench.step_phases import CORE_STEP, PHASES, StepPhases  # noqa: E402

# A 2-layer Qwen3: the forward is small, so the host's own work stands out.
TINY = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 1000, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 16, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "tie_word_embeddings": True, "torch_dtype": "float32", "eos_token_id": 1,
}
# EngineCore's phases: no detokenizer and no constrained rows in `bench offline`.
CORE_PHASES = {label: targets for label, targets in PHASES.items()
               if label != "detokenize" and not label.startswith("masks: ") and label != "apply mask"}
CORE_PHASES["masks (none here)"] = PHASES["masks: wait for the job"] + PHASES["masks: rest"]


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def default_clock() -> str:
    import torch

    return "wall" if torch.cuda.is_available() else "cpu"


def engine_args(args: argparse.Namespace, arch: str) -> argparse.Namespace:
    return argparse.Namespace(
        model=None, arch=arch, dtype=args.dtype, quantization=None, kv_cache_dtype="auto",
        max_model_len=args.max_model_len, enforce_eager=args.enforce_eager, threads=args.threads,
        max_num_seqs=8, max_num_batched_tokens=None, kv_cache_gib=args.kv_cache_gib, async_scheduling=True,
        speculative_config=None)


def requests(args: argparse.Namespace, vocab: int, seed: int) -> list[tuple[list[int], int]]:
    prompt = [(seed * 7919 + i * 104729) % (vocab - 2) + 2 for i in range(args.prompt_len)]  # no EOS
    return [(prompt, args.tokens)]


def phase_table(ms: dict[str, float]) -> str:
    order = sorted(ms, key=lambda k: (k == "step", k == "other", k.startswith("[bg]")))
    lines = [f"{'phase':<28}{'µs per step':>14}"]
    lines += [f"{label:<28}{1000 * ms[label]:14.1f}" for label in order]
    host = sum(v for k, v in ms.items() if k not in ("step", "forward", "logits", "ids to host")
               and not k.startswith("[bg]"))
    lines.append(f"{'host (no fwd/logits/wait)':<28}{1000 * host:14.1f}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default=None, help="shape name, config.json or 'tiny' (default: tiny on the CPU, "
                   "qwen3-0.6b on a GPU)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--kv-cache-gib", type=float, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--clock", choices=sorted(CLOCKS), default=None,
                   help="phase timer: cpu (this thread's CPU time: a loaded host's waits left out; default on "
                   "the CPU) or wall (default on a GPU, where waiting for the device is the point)")
    p.add_argument("--gpu-profile", action="store_true", help="then the GPU busy fraction (torch.profiler)")
    args = p.parse_args()
    import torch

    arch = args.arch_name = args.arch or ("qwen3-0.6b" if torch.cuda.is_available() else "tiny")
    args.clock = args.clock or default_clock()
    with tempfile.TemporaryDirectory() as tmp:
        if arch == "tiny":
            arch = str(Path(tmp) / "config.json")
            Path(arch).write_text(json.dumps(TINY))
            args.kv_cache_gib = args.kv_cache_gib or 0.05
        core, shape_dir = build_engine(engine_args(args, arch))
        try:
            report = measure(core, args)
        finally:
            core.shutdown()
            if shape_dir is not None:
                shape_dir.cleanup()
    print(json.dumps({k: v for k, v in report.items() if k != "phases_ms"}))
    print(phase_table(report["phases_ms"]))
    return 0


def measure(core, args: argparse.Namespace) -> dict:
    vocab = core.info.vocab_size
    run_engine(core, requests(args, vocab, 99), "warmup", False)
    runs = [run_engine(core, requests(args, vocab, r), f"plain{r}", False) for r in range(args.rounds)]
    best = max(runs, key=lambda r: r.output_tok_s)
    decode = best.phases["decode"]
    timed = []
    for r in range(args.rounds):  # the least of each phase: contention on a shared host only adds
        phases = StepPhases(CORE_PHASES, step=CORE_STEP, clock=CLOCKS[args.clock])
        with phases.timing(core.runner.model):
            run_engine(core, requests(args, vocab, 50 + r), f"timed{r}", False)
        timed.append(phases.per_step_ms())
    report = {"device": torch_device_name(), "arch": args.arch_name, "clock": args.clock,
              "prompt_len": args.prompt_len, "tokens": args.tokens, "output_tok_s": round(best.output_tok_s, 1),
              "ms_per_step_mean": round(best.step_ms_mean, 4), "ms_per_step_median": round(best.step_ms_median, 4),
              "decode_ms_per_step": round(1000 * decode["seconds"] / max(decode["steps"], 1), 4),
              "phases_ms": {k: min(t[k] for t in timed) for k in timed[0]}}
    if args.gpu_profile:
        from kvserve.bench.gpu_profile import profile_steps

        prof = profile_steps(core, requests(args, vocab, 77))
        report["gpu_busy_fraction"] = round(prof["gpu_busy_fraction"], 3)
        report["gpu_kernels_per_token"] = round(prof["gpu_kernels"] / args.tokens, 1)
        report["top_kernels"] = [(k["name"][:60], round(k["share"], 3)) for k in prof["top_kernels"][:5]]
    return report


def torch_device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    sys.exit(main())
