"""scripts/structured_overhead.py on a tiny model: its JSON line, and with --profile the step
phases that show where a constrained step's time goes (the mask job, the mask's upload and
apply, sampling)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "structured_overhead.py"


def test_the_profile_shows_the_constrained_steps_mask_phases(tool_model):
    run = subprocess.run([sys.executable, str(SCRIPT), "--model", str(tool_model), "--batch", "4",
                          "--max-tokens", "8", "--rounds", "1", "--profile"],
                         capture_output=True, text=True, timeout=300, env=os.environ)
    assert run.returncode == 0, run.stderr[-2000:]
    first, *table = run.stdout.strip().splitlines()
    figures = json.loads(first)
    assert figures["unconstrained_tok_s"] > 0 and figures["constrained_tok_s"] > 0
    rows = {line[:28].strip(): [float(v) for v in line[28:].split()] for line in table[1:]}
    for phase in ("masks: advance matchers", "masks: fill", "masks: upload", "apply mask"):
        assert rows[phase][0] == 0 < rows[phase][1], phase  # constrained steps only
    assert rows["sample"][0] > 0 and rows["sample"][1] > 0
    assert "masks: wait for the job" in rows
