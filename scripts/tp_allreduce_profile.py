"""The all-reduce share of a tensor-parallel step, from torch.profiler on rank 0.

Runs eager (no CUDA graphs, so that the profiler sees each kernel) decode-heavy batches of
random-weight `--arch` at `--tensor-parallel-size`, and prints, per batch size, the
collectives' share of rank 0's time (GPU: of the kernel time; CPU: of the wall time) and
the step time.
    python3 scripts/tp_allreduce_profile.py --arch llama3-8b --tensor-parallel-size 2
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from kvserve import LLM, SamplingParams

COLLECTIVE_MARKS = ("allreduce", "all_reduce", "allgather", "all_gather")  # NCCL kernel and c10d op names


def device_us(event) -> float:
    return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)


def shares(prof, elapsed_s: float, on_gpu: bool) -> tuple[float, float]:
    """(all-reduce, all-gather) shares: of the GPU's kernel time on a GPU (NCCL kernels);
    on the CPU, the collectives' own CPU time (gloo runs them on the calling thread) over
    the wall time."""
    if on_gpu:
        events = [e for e in prof.key_averages() if device_us(e) > 0 and not e.key.startswith(("c10d::", "nccl:"))]
        time_of, total = device_us, sum(device_us(e) for e in events) or 1.0
    else:
        events = [e for e in prof.key_averages() if e.key.startswith("c10d::")]
        time_of, total = (lambda e: e.self_cpu_time_total), elapsed_s * 1e6
    marked = lambda mark: sum(time_of(e) for e in events if mark in e.key.lower().replace("_", ""))  # noqa: E731
    return marked("allreduce") / total, marked("allgather") / total


def profile_batch(llm: LLM, batch: int, out_tokens: int) -> tuple[float, float, float]:
    """(all-reduce share, all-gather share, ms per step) of one batch, mostly decode steps."""
    prompts = [{"prompt_token_ids": [(7 * i + j) % 30000 + 10 for j in range(128)]} for i in range(batch)]
    params = SamplingParams(temperature=0, max_tokens=out_tokens, ignore_eos=True)
    llm.generate(prompts, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True), use_tqdm=False)  # warm
    steps_before = llm.engine.core.stats().num_steps
    on_gpu = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * on_gpu
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - start
    steps = llm.engine.core.stats().num_steps - steps_before
    return (*shares(prof, elapsed, on_gpu), 1000 * elapsed / max(steps, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="llama3-8b")
    parser.add_argument("--tensor-parallel-size", type=int, default=2)
    parser.add_argument("--batches", default="1,64,512")
    parser.add_argument("--out-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of the engine (shared by the ranks)")
    args = parser.parse_args()
    llm = LLM(arch=args.arch, tensor_parallel_size=args.tensor_parallel_size, enforce_eager=True, threads=args.threads,
              max_model_len=2048, max_num_seqs=512, max_num_batched_tokens=16384)
    print(f"== all-reduce share, {args.arch} TP={args.tensor_parallel_size}, eager, rank 0 "
          f"({'of GPU kernel time' if torch.cuda.is_available() else 'of wall time, CPU'})")
    print(f"{'batch':>6} {'all-reduce %':>13} {'all-gather %':>13} {'ms/step':>9}")
    for batch in (int(b) for b in args.batches.split(",")):
        reduce_share, gather_share, ms = profile_batch(llm, batch, args.out_tokens)
        print(f"{batch:>6} {100 * reduce_share:>12.1f}% {100 * gather_share:>12.1f}% {ms:>9.2f}")
    llm.shutdown()


if __name__ == "__main__":
    main()
