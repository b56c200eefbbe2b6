"""Triton where it is installed, and a stand-in where it is not.

The fused ops keep each Triton kernel beside its torch reference in one module. On a
CPU-only install (no triton) those modules must still import: `triton.jit` then leaves
the kernel as a plain, never-launched function, and the dispatch in kvserve.ops uses
the torch references (HAS_TRITON is False).
"""

from __future__ import annotations

import importlib.util

HAS_TRITON = importlib.util.find_spec("triton") is not None

if HAS_TRITON:
    import triton
    import triton.language as tl
else:

    class _Absent:
        """Just enough of `triton` / `triton.language` to define (not run) kernels."""

        constexpr = "constexpr"

        @staticmethod
        def jit(fn=None, **options):
            return fn if fn is not None else (lambda f: f)

    triton = tl = _Absent()

__all__ = ["HAS_TRITON", "tl", "triton"]
