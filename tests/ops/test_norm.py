"""Fused RMSNorm (+ residual) kernel against its torch reference, and the reference against HF."""

from __future__ import annotations

import pytest
import torch

from tests.ops import triton_interpret

DEVICE = triton_interpret.setup()

from kvserve.ops import rms_norm  # noqa: E402
from kvserve.ops.norm import rms_norm_torch, rms_norm_triton  # noqa: E402

TOL = {torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 1e-3}


def rel_err(out, ref):
    assert not out.isnan().any()
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("hidden", [64, 96])  # 96: a masked tail
def test_kernel_matches_reference_with_and_without_residual(dtype, hidden):
    g = torch.Generator().manual_seed(0)
    x, res = (torch.randn(5, hidden, generator=g).to(dtype).to(DEVICE) for _ in range(2))
    w = (1 + 0.1 * torch.randn(hidden, generator=g)).to(dtype).to(DEVICE)
    out, none = rms_norm_triton(x, w, 1e-6)
    ref, _ = rms_norm_torch(x, w, 1e-6)
    assert none is None and rel_err(out, ref) < TOL[dtype]
    out, new_res = rms_norm_triton(x, w, 1e-6, residual=res)
    ref, ref_res = rms_norm_torch(x, w, 1e-6, residual=res)
    torch.testing.assert_close(new_res, ref_res)  # the interpreter truncates to bf16 where GPUs round
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_matches_hugging_face_llama_norm(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    hf = LlamaRMSNorm(32, eps=1e-5)
    hf.weight.data = 1 + 0.1 * torch.randn(32)
    hf = hf.to(dtype)
    x = torch.randn(4, 32).to(dtype)
    ref, _ = rms_norm_torch(x, hf.weight.data, 1e-5)
    assert torch.equal(ref, hf(x))


def test_dispatch_on_cpu_uses_the_reference():
    x, res, w = torch.randn(3, 16), torch.randn(3, 16), torch.rand(16)
    out, new_res = rms_norm(x, w, 1e-6, residual=res)
    ref, ref_res = rms_norm_torch(x, w, 1e-6, residual=res)
    assert torch.equal(out, ref) and torch.equal(new_res, ref_res)
