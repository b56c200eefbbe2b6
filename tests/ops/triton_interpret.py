"""Run kvserve's Triton kernels on the CPU through Triton's interpreter (tests only).

On a machine without a GPU, `setup()` sets TRITON_INTERPRET=1 and, in case triton or a
kernel module was already imported in compiled mode (another test imported kvserve.ops
first), routes every @triton.jit function to the interpreter when it runs. Where a GPU
is present it does nothing and the kernels compile as usual. It also patches two gaps
of Triton 3.6's interpreter that our kernels hit: loop bounds taken with int() on
1-element arrays (refused by NumPy >= 2.4), tl.dot on bfloat16, which it multiplies
as raw uint16 bit patterns, and casts to float8_e4m3fn, which it rounds by cutting
bits and dropping the carry (1.998 becomes 1.0): torch casts them instead, rounding to
nearest even as the GPU's conversion does.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def setup() -> str:
    """Skip the calling module without triton; on the CPU, switch triton to its interpreter. Returns the device."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed", allow_module_level=True)
    if DEVICE == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
        _patch_interpreter()
        _route_jit_to_interpreter()
    return DEVICE


def _route_jit_to_interpreter() -> None:
    """Run compiled-mode JITFunctions (made before TRITON_INTERPRET was set) in the interpreter."""
    from triton.runtime import interpreter, jit

    def interpreted(fn):
        if "_kvserve_interpreted" not in fn.__dict__:
            fn._kvserve_interpreted = interpreter.InterpretedFunction(fn.fn)
        return fn._kvserve_interpreted

    jit.JITFunction.run = lambda self, *args, grid, warmup, **kwargs: interpreted(self).run(
        *args, grid=grid, warmup=warmup, **kwargs)
    jit.JITFunction.__call__ = lambda self, *args, **kwargs: interpreted(self)(*args, **kwargs)


def _patch_interpreter() -> None:
    import numpy as np
    from triton.runtime import interpreter

    if getattr(interpreter, "_kvserve_patched", False):
        return
    interpreter._kvserve_patched = True
    patch_tensor = interpreter._patch_lang_tensor

    def patch_index(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interpreter._patch_lang_tensor = patch_index
    create_dot = interpreter.InterpreterBuilder.create_dot

    def as_float32(handle):
        if handle.dtype.scalar.name != "bf16":
            return handle
        bits = handle.data.astype(np.uint32) << 16  # bfloat16 is the top half of a float32
        return interpreter.TensorHandle(bits.view(np.float32), interpreter.tl.float32)

    def create_dot_bf16(self, a, b, d, input_precision, max_num_imprecise_acc):
        return create_dot(self, as_float32(a), as_float32(b), d, input_precision, max_num_imprecise_acc)

    interpreter.InterpreterBuilder.create_dot = create_dot_bf16
    _patch_fp8_casts(interpreter, np)


def _patch_fp8_casts(interpreter, np) -> None:
    create_fp_to_fp = interpreter.InterpreterBuilder.create_fp_to_fp

    def fp_to_fp(self, src, dst_type, rounding_mode):
        if dst_type.scalar.name != "fp8e4nv" or src.dtype.scalar.name not in ("fp32", "fp16", "bf16"):
            return create_fp_to_fp(self, src, dst_type, rounding_mode)
        wide = create_fp_to_fp(self, src, interpreter.tl.float32, rounding_mode) if src.dtype.scalar.name == "bf16" \
            else src
        data = torch.from_numpy(np.ascontiguousarray(wide.data, dtype=np.float32)).to(torch.float8_e4m3fn)
        return interpreter.TensorHandle(data.view(torch.uint8).numpy(), dst_type.scalar)

    interpreter.InterpreterBuilder.create_fp_to_fp = fp_to_fp
