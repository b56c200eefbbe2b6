"""scripts/step_host_profile.py on the CPU: one batch-1 request on the tiny Qwen3 shape, its
figures as JSON and a table of host µs per phase that adds up to the step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "step_host_profile.py"


def test_the_profile_reports_throughput_and_each_phase_of_a_decode_step(tmp_path):
    args = ["--tokens", "24", "--prompt-len", "16", "--rounds", "1", "--threads", "1", "--max-model-len", "256"]
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=180,
                          cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    report = json.loads(next(line for line in lines if line.startswith("{")))
    assert report["arch"] == "tiny" and report["clock"] == "cpu" and report["tokens"] == 24
    assert report["output_tok_s"] > 0 and report["ms_per_step_median"] > 0
    rows = lines[next(i for i, line in enumerate(lines) if line.startswith("phase")) + 1:]
    table = {name: float(value) for name, value in (row.rsplit(None, 1) for row in rows)}
    for phase in ("schedule", "prepare inputs", "forward", "logits", "sample", "process outputs"):
        assert table[phase] > 0, phase
    parts = sum(v for k, v in table.items() if k not in ("step", "host (no fwd/logits/wait)"))
    assert abs(parts - table["step"]) < 1.0  # one round: the phases and `other` add up to the step
    assert 0 < table["host (no fwd/logits/wait)"] < table["step"]
