"""The INT4 kernels compile for Hopper (sm_90) here, with no GPU: the interpreter runs them as
Python and so cannot see what only the compiler refuses. In a subprocess without
TRITON_INTERPRET, so that no interpreter setting of another test module applies."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kvserve.ops import int4_matmul as m

def compile(fn, signature, constexprs):
    source = ASTSource(fn=fn, signature={**signature, **{k: "constexpr" for k in constexprs}}, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 3})

for block_m, atomic, unpack, dtype in ((16, True, True, "bf16"), (64, False, True, "bf16"),
                                      (16, True, False, "bf16"), (16, False, True, "fp32")):
    ptrs = {"x_ptr": f"*{dtype}", "qweight_ptr": "*i32", "scales_ptr": f"*{dtype}", "zeros_ptr": f"*{dtype}",
            "y_ptr": "*fp32" if atomic else f"*{dtype}", "rows": "i32", "out": "i32", "num_groups": "i32",
            "groups_per_split": "i32"}
    kernel = compile(m._int4_matmul_kernel, ptrs, {"GROUP": 128, "BLOCK_M": block_m, "BLOCK_N": 64,
                                                    "ATOMIC": atomic, "UNPACK_WORDS": unpack,
                                                    "IEEE": dtype == "fp32"})
    assert ("mma" in kernel.asm["ptx"]) == (dtype == "bf16")  # tensor cores, but not for IEEE float32
compile(m._dequantize_kernel, {"qweight_ptr": "*i32", "scales_ptr": "*bf16", "zeros_ptr": "*bf16", "w_ptr": "*bf16",
                               "out": "i32"}, {"GROUP": 128, "BLOCK_N": m.DEQUANT_BLOCK_N})
compile(m._take_sums_kernel, {"sums_ptr": "*fp32", "y_ptr": "*bf16", "n": "i32"}, {"BLOCK": m.TAKE_BLOCK})
print("ok")
"""


def test_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the interpreter's modules set it
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
