"""Per-step timeline of an offline workload, to find stalls (JIT compiles, syncs).

    python3 scripts/gpu_step_trace.py [--arch qwen3-0.6b] [--workload throughput] [--steps 30]

Builds one engine, runs the smoke warm-up, then the workload twice with overlapped
scheduling and once without, printing for the first steps of each run: tokens,
requests, wall ms, and whether Triton compiled a kernel during the step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kvserve.bench.offline import WORKLOADS, build_engine, make_requests, run_engine  # noqa: E402


def triton_cache_entries() -> set[str]:
    """Names of the kernels in Triton's on-disk cache (one folder per compiled variant)."""
    root = Path(os.environ.get("TRITON_CACHE_DIR", Path.home() / ".triton" / "cache"))
    if not root.exists():
        return set()
    return {f"{entry.name[:8]}:{f.stem}" for entry in root.iterdir() for f in entry.glob("*.json")
            if not f.name.startswith("__grp__")}


def trace(core, requests, label: str, steps: int) -> None:
    from kvserve.engine.request import EngineRequest
    from kvserve.sampling_params import SamplingParams

    for i, (prompt, n_out) in enumerate(requests):
        core.add_request(EngineRequest(f"{label}-{i}", prompt, SamplingParams(temperature=0, max_tokens=n_out,
                                                                               ignore_eos=True)))
    start, rows, n = time.perf_counter(), [], 0
    while core.has_unfinished_requests():
        before = triton_cache_entries() if n < steps else set()
        t0 = time.perf_counter()
        core.step()
        ms = 1000 * (time.perf_counter() - t0)
        if n < steps:
            stats = core.stats()
            compiled = triton_cache_entries() - before
            rows.append(f"  {n:4d} {stats.step_num_tokens:6d} tok {stats.step_num_seqs:4d} seqs {ms:8.2f} ms"
                        + (f"  <- compiled {sorted(compiled)}" if compiled else ""))
        n += 1
    print(f"== {label}: {n} steps, {time.perf_counter() - start:.2f} s")
    print("\n".join(rows))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="qwen3-0.6b")
    p.add_argument("--workload", default="throughput")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()
    ns = argparse.Namespace(arch=args.arch, model=None, dtype="auto", max_model_len=args.max_model_len,
                            enforce_eager=False, max_num_seqs=None, max_num_batched_tokens=None,
                            kv_cache_gib=None, async_scheduling=True)
    core, _shape_dir = build_engine(ns)
    vocab = core.info.vocab_size
    run_engine(core, make_requests(WORKLOADS["smoke"], vocab, 1), "warmup", False)
    workload = WORKLOADS[args.workload]
    trace(core, make_requests(workload, vocab, 0), "overlapped-1", args.steps)
    trace(core, make_requests(workload, vocab, 10), "overlapped-2", args.steps)
    core.overlap = False
    trace(core, make_requests(workload, vocab, 20), "sync", args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
