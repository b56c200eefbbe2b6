"""SiLU-and-mul: the gated MLP's activation, silu(gate) * up, on the fused gate|up output.

Rounding follows Hugging Face's `act_fn(gate_proj(x)) * up_proj(x)`: silu is computed in
float32 and rounded to the model dtype, then multiplied by up and rounded again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kvserve.ops._triton import tl, triton

BLOCK = 1024  # columns per program


def silu_and_mul_torch(x: torch.Tensor) -> torch.Tensor:
    """Reference: x [..., 2 * inter] = gate | up  ->  silu(gate) * up [..., inter]."""
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


@triton.jit
def _silu_and_mul_kernel(
    x_ptr,  # [N, 2 * inter]
    out_ptr,  # [N, inter]
    inter,
    stride_x, stride_o,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < inter
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + inter + cols, mask=mask, other=0.0).to(tl.float32)
    act = (gate / (1.0 + tl.exp(-gate))).to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * stride_o + cols, (act * up).to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul_triton(x: torch.Tensor) -> torch.Tensor:
    """Same contract as silu_and_mul_torch."""
    inter = x.shape[-1] // 2
    x2 = x.reshape(-1, 2 * inter)  # [N, 2 * inter]
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out = x.new_empty(x2.shape[0], inter)  # [N, inter]
    if x2.shape[0]:
        grid = (x2.shape[0], triton.cdiv(inter, BLOCK))
        _silu_and_mul_kernel[grid](x2, out, inter, x2.stride(0), out.stride(0), BLOCK=BLOCK, num_warps=4)
    return out.view(*x.shape[:-1], inter)
