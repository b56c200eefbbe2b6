"""Fused SiLU-and-mul kernel against its torch reference."""

from __future__ import annotations

import pytest
import torch

from tests.ops import triton_interpret

DEVICE = triton_interpret.setup()

from kvserve.ops.activation import silu_and_mul_torch, silu_and_mul_triton  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kernel_matches_reference(dtype):
    x = (3 * torch.randn(2, 3, 2 * 1100, generator=torch.Generator().manual_seed(0))).to(dtype).to(DEVICE)
    out = silu_and_mul_triton(x)  # 1100 columns: two programs per row, the second masked
    ref = silu_and_mul_torch(x)
    assert out.shape == (2, 3, 1100) and not out.isnan().any()
    err = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
    assert err < {torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 1e-3}[dtype]
