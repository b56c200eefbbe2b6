"""Weight-only INT4 in groups along the input (GPTQ / AWQ checkpoints, or round-to-nearest at load).

One module, `Int4GroupLinear`, in the packed layout of kvserve.ops.int4_matmul (GPTQ's
qweight [in / 8, out], scales and integer zero points [in / group, out]). GPTQ and AWQ
checkpoints are repacked into it at load (models/quantization_formats.py); a float model
is quantized into it by `Int4GroupLinear.from_float` (`--quantization int4` on a GPU).
On a GPU the matmul is the Triton kernel; elsewhere the torch reference (dequantize, then
one matmul), which is what the CPU tests check the loading against.
"""

from __future__ import annotations

import torch

from kvserve.models.quantization_base import QuantizedLinear
from kvserve.ops._triton import HAS_TRITON
from kvserve.ops.int4_matmul import GROUP_SIZES, dequantize_int4, int4_matmul_torch, int4_matmul_triton

RTN_GROUP = 128  # group size of `from_float`, the one GPTQ and AWQ checkpoints mostly use


class Int4GroupLinear(QuantizedLinear):
    """y = x @ W + bias with W[k, o] = (q[k, o] - zeros[k // group, o]) * scales[k // group, o].

    qweight int32 [in / 8, out] (nibble j of word [i, o] is q[8i + j, o]); scales and zeros
    [in / group, out] in the activations' dtype (zeros hold small integers, 0..16). `output_sizes`
    is kept from a merged projection (qkv, gate|up): its blocks are column blocks here.
    """

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                 bias: torch.Tensor | None, output_sizes: tuple[int, ...] | None = None) -> None:
        super().__init__(bias)
        in_features, out = qweight.shape[0] * 8, qweight.shape[1]
        if scales.shape != zeros.shape or scales.shape[1] != out or in_features % scales.shape[0]:
            raise ValueError(f"int4 scales {tuple(scales.shape)} and zeros {tuple(zeros.shape)} do not fit "
                             f"qweight {tuple(qweight.shape)}")
        self.group_size = in_features // scales.shape[0]
        if self.group_size not in GROUP_SIZES:
            raise ValueError(f"int4 group size must be one of {GROUP_SIZES}, got {self.group_size}")
        self.in_features, self.out_features = in_features, out
        if output_sizes is not None:
            self.output_sizes = tuple(output_sizes)
        # the kernels index all three as dense row-major arrays
        self.register_buffer("qweight", qweight.contiguous())
        self.register_buffer("scales", scales.contiguous())
        self.register_buffer("zeros", zeros.contiguous())

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None,
                   output_sizes: tuple[int, ...] | None = None) -> Int4GroupLinear:
        """Round-to-nearest, asymmetric, from weight [out, in], in groups of RTN_GROUP inputs
        (of 64 or 32 where the input count is no multiple of 128: small test models)."""
        group_size = next((g for g in sorted(GROUP_SIZES, reverse=True) if weight.shape[1] % g == 0), RTN_GROUP)
        q, scales, zeros = quantize_rtn(weight.detach().t(), group_size)
        return cls(pack_along_input(q), scales.to(weight.dtype), zeros.to(weight.dtype), bias, output_sizes)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        kernel = int4_matmul_triton if HAS_TRITON and x.is_cuda else int4_matmul_torch
        return kernel(x, self.qweight, self.scales, self.zeros)

    def dequantized(self) -> torch.Tensor:
        """The weight it stands for, [out, in], in the scales' dtype."""
        return dequantize_int4(self.qweight, self.scales, self.zeros).t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


def quantize_rtn(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q int32 [in, out] in 0..15, scales, zeros [in / group, out] float32) for weight [in, out]:
    each group's range [min, max] (widened to hold 0) mapped onto 0..15."""
    in_features, out = weight.shape
    if in_features % group_size:
        raise ValueError(f"int4 needs input features in groups of {group_size}, got {in_features}")
    groups = weight.float().view(in_features // group_size, group_size, out)
    low, high = groups.amin(1).clamp(max=0), groups.amax(1).clamp(min=0)  # [groups, out]
    scales = ((high - low) / 15).clamp(min=1e-8)
    zeros = (-low / scales).round().clamp(0, 15)
    q = (groups / scales[:, None] + zeros[:, None]).round().clamp(0, 15)
    return q.view(in_features, out).to(torch.int32), scales, zeros


def pack_along_input(q: torch.Tensor) -> torch.Tensor:
    """q [in, out] with values 0..15 -> int32 [in / 8, out], eight rows to a word, low nibble first."""
    in_features, out = q.shape
    rows = q.to(torch.int64).view(in_features // 8, 8, out)
    words = torch.zeros(in_features // 8, out, dtype=torch.int64, device=q.device)
    for j in range(8):
        words |= rows[:, j] << (4 * j)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)  # the same 32 bits, signed
