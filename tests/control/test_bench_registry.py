"""scripts/bench_registry.py (docs/benchmarks.md) runs and times what it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_registry.py"


def test_the_registry_benchmark_times_cp_pull_and_cached_loads(tiny_llama, tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--model-dir", str(tiny_llama), "--runs", "2", "--json"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["bytes"] == sum(p.stat().st_size for p in tiny_llama.iterdir())
    assert {k: len(v) for k, v in result["seconds"].items()} == {"push": 1, "cp": 2, "pull": 2, "cached": 2}
    assert all(0 < t < 60 for times in result["seconds"].values() for t in times)
    assert list(tmp_path.iterdir()) == []  # the temporary registry and copies are gone
