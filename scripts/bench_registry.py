"""Model load time from the local registry (hashing every file) against `cp` of the same files.

    python3 scripts/bench_registry.py [--model-dir DIR] [--runs 3]

Without --model-dir it uses the embedded default model (converted on first use). The
model is pushed into a temporary local registry; then, `--runs` times each:
  cp      `cp -r` of the model directory into a fresh directory;
  pull    resolve() into an empty cache: every blob copied and hashed on the way;
  cached  resolve() of the copy the last pull left: every file hashed, nothing copied
          (what each `kvserve serve --model NAME:VERSION` start pays once pulled).
Every run reads files the page cache already holds (the push read them all first), so
the figures compare CPU and copy costs, not disk reads; each run's copies are removed
before the next. Prints medians and all runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kvserve.control.ref import ModelRef
from kvserve.control.registry import Registry
from kvserve.control.registry_config import RegistryConfig
from kvserve.control.resolve import resolve
from kvserve.control.storage import LocalStorage

REF = ModelRef("bench", version="v1")


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure(model_dir: Path, scratch: Path, runs: int) -> dict[str, list[float]]:
    registry_root = scratch / "registry"
    push = timed(lambda: Registry(LocalStorage(registry_root)).push(model_dir, REF))
    times: dict[str, list[float]] = {"push": [push], "cp": [], "pull": [], "cached": []}
    for run in range(runs):
        target = scratch / f"cp-{run}"
        times["cp"].append(timed(lambda: subprocess.run(["cp", "-r", str(model_dir), str(target)], check=True)))
        config = RegistryConfig(url=str(registry_root), cache_dir=str(scratch / f"pulled-{run}"))
        times["pull"].append(timed(lambda: resolve(REF, config)))
        times["cached"].append(timed(lambda: resolve(REF, config)))
        # Copies left behind pile up dirty pages until the kernel throttles whichever
        # writer comes next; removed, each run starts from the same state.
        shutil.rmtree(target)
        shutil.rmtree(config.pulled_dir())
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="model directory (default: the embedded model)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the runs as JSON")
    args = parser.parse_args()
    if args.model_dir is None:
        from kvserve.default_model import default_model_dir

        args.model_dir = default_model_dir()
    size = sum(p.stat().st_size for p in args.model_dir.rglob("*") if p.is_file())
    with tempfile.TemporaryDirectory(prefix="kvserve-bench-registry-") as scratch:
        times = measure(args.model_dir, Path(scratch), args.runs)
    if args.json:
        print(json.dumps({"model_dir": str(args.model_dir), "bytes": size, "seconds": times}, indent=2))
        return 0
    print(f"{args.model_dir} ({size / 2**20:.1f} MiB), {args.runs} runs, median [all]:")
    for name, values in times.items():
        runs = ", ".join(f"{v:.3f}" for v in values)
        print(f"  {name:7} {statistics.median(values):7.3f} s  {size / 2**20 / statistics.median(values):8.0f} MiB/s  [{runs}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
