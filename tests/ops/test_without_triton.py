"""A CPU-only install without triton: ops and attention import and fall back to torch."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["triton"] = None  # as if triton were not installed
import torch
from kvserve import ops
from kvserve.attention import get_backend
x = torch.randn(2, 8)
out, _ = ops.rms_norm(x, torch.ones(8), 1e-6)
assert ops.silu_and_mul(x).shape == (2, 4)
assert get_backend("auto", "cuda").name == "torch"
from kvserve.models.quantization_int4 import Int4GroupLinear
assert Int4GroupLinear.from_float(torch.randn(4, 64), None)(x.repeat(1, 8)).shape == (2, 4)
print("ok")
"""


def test_ops_and_attention_work_without_triton():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
