"""The gateway's memory levels off under a steady streaming load: its in-process store (streams,
cached and idempotent answers) stays within `memory.max_bytes`, and its RSS within that
budget plus a fixed overhead, flat once the store is full.

The load is scripts/gateway_soak.py's (a gateway and a fake upstream as subprocesses, an
open-loop Poisson load of unique streaming requests); this test runs it for 45 s with an
8 MiB budget, which the store fills in a few seconds, and judges its samples.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gateway_soak.py"
MB = 1 << 20
BUDGET_MB = 8
OVERHEAD = 40 * MB  # connections, buffers, the allocator's slack: measured 8-12 MiB on the dev box


@pytest.mark.timeout(180)
def test_rss_levels_off_under_the_budget_plus_a_fixed_overhead(tmp_path):
    out = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--seconds", "45", "--rate", "150",
                           "--budget-mb", str(BUDGET_MB), "--sample-s", "3", "--warmup-s", "15", "--json", str(out)],
                          capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    print("\n" + done.stdout[-1500:])
    assert result["requests"] > 1500 and sum(result["errors"].values()) < result["requests"] / 100, result["errors"]
    # the store was full (the budget, not a TTL, bounded it) and never went past it
    assert BUDGET_MB * MB * 0.9 <= result["store_max"] <= BUDGET_MB * MB
    assert max(s["rss"] for s in result["samples"]) <= result["baseline_rss"] + BUDGET_MB * MB + OVERHEAD
    # flat once the store is full (a busy box fills it later): an unbounded store would grow ~10 KB per request
    full_at = next(s["t"] for s in result["samples"] if s["store"] >= BUDGET_MB * MB * 0.9)
    settled = [s for s in result["samples"] if s["t"] >= full_at + 6]
    assert len(settled) >= 4, result["samples"]
    grown = max(s["rss"] for s in settled) - min(s["rss"] for s in settled)
    served = settled[-1]["done"] - settled[0]["done"]
    assert grown <= 6 * MB < served * 10_000 / 4, result["samples"]  # under a quarter of unbounded growth
