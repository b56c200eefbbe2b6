"""Where a batch-1 CPU decode step's time goes, for several dtypes in one run.

    python scripts/cpu_decode_profile.py                       # fp32, bf16, bf16+int8, bf16+int4
    python scripts/cpu_decode_profile.py --configs bfloat16+int4 --rounds 3 --threads 2
    python scripts/cpu_decode_profile.py --ops 8                # also a torch.profiler op table

One engine per configuration (the embedded SmolLM2-135M-Instruct unless --model), built
once; then rounds that run one greedy request (random prompt ids, --prompt-len in,
--new-tokens out) on each engine in turn, so that drift on a shared machine hits every
configuration alike. Per decode token it reports wall and process-CPU milliseconds of the
whole step and of its parts: the scheduler (schedule + update_from_output), the model
forward, the LM head and the sampler; then the detokenizer's cost per token (the server's
incremental detokenizer over the same ids), and the load average around the run.
With --ops N, N decode steps of each engine run under torch.profiler: op calls per step
and the ops with the most self CPU time.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

PARTS = ("step", "schedule", "model", "lm_head", "sample+launch", "update")


class Clock:
    """Wall and process-CPU seconds per named part, per step."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = defaultdict(list)

    @contextmanager
    def part(self, name: str):
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name].append(time.perf_counter() - w)
            self.cpu[name].append(time.process_time() - c)

    def wrap(self, obj, attr: str, name: str) -> None:
        inner = getattr(obj, attr)

        def timed(*args, **kwargs):
            with self.part(name):
                return inner(*args, **kwargs)

        setattr(obj, attr, timed)


def build(model: str | None, config: str, threads: int):
    from kvserve.config import EngineConfig
    from kvserve.engine.engine_core import EngineCore

    dtype, _, quant = config.partition("+")
    settings = dict(model=model, dtype=dtype, quantization=quant or None, threads=threads,
                    kv_cache_gib=0.05, max_model_len=1024, async_scheduling=False)
    if os.environ.get("KVSERVE_CPU_COMPILE"):
        settings["enforce_eager"] = False
    return EngineCore(EngineConfig.from_flat(**settings))


def instrument(core) -> Clock:
    clock = Clock()
    clock.wrap(core.scheduler, "schedule", "schedule")
    clock.wrap(core.scheduler, "update_from_output", "update")
    clock.wrap(core.runner.model, "forward", "model")
    clock.wrap(core.runner.model, "compute_logits", "lm_head")
    clock.wrap(core.runner.sampler, "sample", "sample+launch")
    return clock


def run_one(core, clock: Clock | None, prompt: list[int], new_tokens: int, name: str) -> tuple[list[int], dict]:
    """Generate greedily; returns (output ids, {part: (wall ms, cpu ms) median per decode step})."""
    from kvserve.engine.request import EngineRequest
    from kvserve.sampling_params import SamplingParams

    core.add_request(EngineRequest(name, prompt, SamplingParams(temperature=0.0, max_tokens=new_tokens,
                                                                 ignore_eos=True)))
    ids: list[int] = []
    if clock is not None:
        clock.wall.clear(), clock.cpu.clear()
    start = time.perf_counter()
    while core.has_unfinished_requests():
        if clock is None:
            outs = core.step()
        else:
            with clock.part("step"):
                outs = core.step()
        for out in outs:
            ids.extend(out.new_token_ids)
    figures = {"elapsed_s": time.perf_counter() - start}
    if clock is not None:  # drop the prefill step (the first of each part)
        for p in PARTS:
            if len(clock.wall[p]) > 1:
                figures[p] = (1000 * statistics.median(clock.wall[p][1:]), 1000 * statistics.median(clock.cpu[p][1:]))
    return ids, figures


def detokenizer_us(core, prompt: list[int], ids: list[int]) -> float:
    from kvserve.engine.detokenizer import IncrementalDetokenizer
    from kvserve.tokenizer import load_tokenizer

    tok = load_tokenizer(core.tokenizer_path)
    best = float("inf")
    for _ in range(3):
        detok = IncrementalDetokenizer(tok, prompt, stop=[])
        t0 = time.process_time()
        for i in ids:
            detok.add_tokens([i])
        best = min(best, time.process_time() - t0)
    return 1e6 * best / len(ids)


def op_table(core, prompt: list[int], steps: int, top: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    from kvserve.engine.request import EngineRequest
    from kvserve.sampling_params import SamplingParams

    core.add_request(EngineRequest("ops", prompt, SamplingParams(temperature=0.0, max_tokens=steps + 4,
                                                                  ignore_eos=True)))
    core.step(), core.step()  # prefill and a first decode outside the trace
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            core.step()
    while core.has_unfinished_requests():
        core.step()
    events = prof.key_averages()
    calls = sum(e.count for e in events if not e.key.startswith("ProfilerStep"))
    print(f"    op calls per decode step: {calls / steps:.0f}")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        print(f"    {e.key:<44} {e.count / steps:>6.1f} calls/step {e.self_cpu_time_total / steps / 1000:>7.2f} ms/step")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory (default: the embedded model)")
    p.add_argument("--configs", default="float32,bfloat16,bfloat16+int8,bfloat16+int4",
                   help="comma-separated DTYPE[+QUANTIZATION]")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--prompt-len", type=int, default=40)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--ops", type=int, default=0, help="decode steps to run under torch.profiler (0: none)")
    p.add_argument("--top", type=int, default=12, help="ops listed with --ops")
    args = p.parse_args()

    configs = args.configs.split(",")
    cores = {c: build(args.model, c, args.threads) for c in configs}
    clocks = {c: instrument(core) for c, core in cores.items()}
    prompt = random.Random(0).choices(range(1000, 20000), k=args.prompt_len)
    for c, core in cores.items():  # warm-up: first-call costs out of the figures
        run_one(core, None, prompt, 8, "warmup")
    print(f"load average before: {os.getloadavg()}; threads {args.threads}")
    results: dict[str, list[dict]] = defaultdict(list)
    outputs: dict[str, list[int]] = {}
    for r in range(args.rounds):
        for c, core in cores.items():
            ids, figures = run_one(core, clocks[c], prompt, args.new_tokens, f"r{r}")
            results[c].append(figures)
            outputs[c] = ids
    print(f"load average after: {os.getloadavg()}")
    print(f"{'config':<16} {'tok/s':>7} " + " ".join(f"{p:>16}" for p in PARTS) + "   (ms per decode token: wall/cpu)")
    for c in configs:
        for figures in results[c]:
            rate = args.new_tokens / figures["elapsed_s"]
            cells = " ".join(f"{figures[p][0]:>7.2f}/{figures[p][1]:<8.2f}" if p in figures else f"{'-':>16}"
                             for p in PARTS)
            print(f"{c:<16} {rate:>7.1f} {cells}")
    first = configs[0]
    for c in configs[1:]:
        same = next((i for i, (a, b) in enumerate(zip(outputs[first], outputs[c])) if a != b), len(outputs[c]))
        print(f"greedy agreement {c} vs {first}: the first {same}/{len(outputs[first])} tokens")
    print(f"detokenizer: {detokenizer_us(cores[first], prompt, outputs[first]):.1f} us CPU per token")
    if args.ops:
        for c, core in cores.items():
            print(f"  {c}:")
            op_table(core, prompt, args.ops, args.top)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
