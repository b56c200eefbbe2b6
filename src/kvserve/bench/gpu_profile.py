"""Where a workload's time goes: GPU busy fraction and the largest kernels (torch.profiler)."""

from __future__ import annotations

import time
from collections import defaultdict


def profile_steps(core, requests, top: int = 8) -> dict:
    """Run `requests` through the engine under the profiler; kernel time over wall time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from kvserve.engine.request import EngineRequest
    from kvserve.sampling_params import SamplingParams

    for i, (prompt, n_out) in enumerate(requests):
        core.add_request(EngineRequest(f"prof-{i}", prompt, SamplingParams(temperature=0.0, max_tokens=n_out, ignore_eos=True)))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        while core.has_unfinished_requests():
            core.step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall_ms = 1000 * (time.perf_counter() - start)
    kernels: dict[str, float] = defaultdict(float)
    launches = 0
    for event in prof.events():
        if event.device_type.name == "CUDA":
            kernels[event.name] += event.device_time / 1000  # us -> ms
            launches += 1
    busy_ms = sum(kernels.values())
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1])[:top]
    return {
        "wall_ms": wall_ms,
        "gpu_busy_ms": busy_ms,
        "gpu_busy_fraction": busy_ms / wall_ms if wall_ms else 0.0,
        "gpu_kernels": launches,  # kernels and copies the GPU ran (graph replays count each kernel)
        "top_kernels": [{"name": n, "total_ms": t, "share": t / busy_ms if busy_ms else 0.0} for n, t in ranked],
    }
