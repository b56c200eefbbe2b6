"""RMSNorm, optionally fused with the residual add before it.

Rounding follows Hugging Face's Llama/Qwen layers, so that float32 and bfloat16 runs
match the reference model: the residual sum is rounded to the model dtype (it is stored
as the next residual), normalisation runs in float32 and is rounded to the model dtype
before the weight multiplies it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kvserve.ops._triton import tl, triton


def rms_norm_torch(
    x: torch.Tensor,  # [N, hidden]
    weight: torch.Tensor,  # [hidden]
    eps: float,
    residual: torch.Tensor | None = None,  # [N, hidden]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reference: (norm(x + residual) * weight, x + residual), or (norm(x) * weight, None).

    torch's fused rms_norm does the float32 normalisation in one op (instead of six); in
    float32 the weight joins it, elsewhere the normed rows are rounded to x's dtype first."""
    if residual is not None:
        x = x + residual
        residual = x
    shape = (x.shape[-1],)
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, shape, weight, eps), residual
    normed = F.rms_norm(x.float(), shape, eps=eps)
    return (weight * normed.to(x.dtype)).to(x.dtype), residual


@triton.jit
def _rms_norm_kernel(
    x_ptr,  # [N, hidden]
    residual_ptr,  # [N, hidden], read when HAS_RESIDUAL
    weight_ptr,  # [hidden]
    out_ptr,  # [N, hidden]
    residual_out_ptr,  # [N, hidden], written when HAS_RESIDUAL
    hidden,
    eps,
    stride_x, stride_r, stride_o, stride_ro,
    BLOCK: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < hidden
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x = x + tl.load(residual_ptr + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
        x = x.to(x_ptr.dtype.element_ty)
        tl.store(residual_out_ptr + row * stride_ro + cols, x, mask=mask)
        x = x.to(tl.float32)
    normed = x * tl.rsqrt(tl.sum(x * x, 0) / hidden + eps)
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    out = normed.to(x_ptr.dtype.element_ty).to(tl.float32) * weight
    tl.store(out_ptr + row * stride_o + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """[N, hidden] view (a copy only if the last axis is strided)."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


def rms_norm_triton(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as rms_norm_torch; one program per row (hidden <= 64k)."""
    hidden = x.shape[-1]
    x2 = _rows(x)  # [N, hidden]
    out = torch.empty_like(x2)
    res2 = _rows(residual) if residual is not None else x2
    res_out = torch.empty_like(x2) if residual is not None else out
    block = triton.next_power_of_2(hidden)
    if x2.shape[0]:
        _rms_norm_kernel[(x2.shape[0],)](
            x2, res2, weight, out, res_out, hidden, eps,
            x2.stride(0), res2.stride(0), out.stride(0), res_out.stride(0),
            BLOCK=block, HAS_RESIDUAL=residual is not None, num_warps=min(max(block // 512, 1), 16),
        )
    new_residual = res_out.view(x.shape) if residual is not None else None
    return out.view(x.shape), new_residual
