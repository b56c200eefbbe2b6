"""y = x @ W for weight-only INT4 in groups along the input: the Triton kernel and its torch reference.

The packed layout (one for every source: GPTQ, AWQ, round-to-nearest at load):
- qweight int32 [in / 8, out]: nibble j (bits 4j..4j+3, low nibble first) of word [i, o]
  is q[8i + j, o], a value in 0..15 (GPTQ's own qweight layout);
- scales [in / group, out] and zeros [in / group, out], in the activations' dtype: the
  zero point is a small integer (0..16: GPTQ stores it minus one) kept unpacked, so out
  may be any size;
- W[k, o] = (q[k, o] - zeros[k // group, o]) * scales[k // group, o].

Up to FUSED_MAX_ROWS rows the kernel unpacks each [group, BLOCK_N] tile of codes in
registers and multiplies them in place, applying the group's zero point and scale to the
partial sums (decode is bound by reading the weights: 4 bits instead of 16).
The rows are bucketed into BLOCK_M 16 or 64 and the row count is not a specialisation key,
so one compile serves every batch size of a bucket. At small row counts there are too few
column tiles to fill the GPU, so the input is also split (several programs per tile,
adding into a float32 workspace that one more pass turns into the output and zeroes again:
two kernels a call, no memset). Above FUSED_MAX_ROWS (prefill) the weight is dequantized once per
call (one Triton pass, 2.5 bytes a weight) and the matmul is cuBLAS's: there the GEMM is
compute-bound and the extra pass over the weight is small next to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

from kvserve.ops._triton import tl, triton

FUSED_MAX_ROWS = 64
GROUP_SIZES = (32, 64, 128)  # the kernel reads one group per step: a power of two, at least 16


def dequantize_int4(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """The weight [in, out] in scales' dtype (q - zero is exact in any float dtype, so the
    one rounding is the product's, as in dequantize_int4_triton)."""
    groups, out = scales.shape
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=qweight.device)
    q = (qweight[:, None, :] >> shifts[None, :, None]) & 0xF  # [in / 8, 8, out]
    q = q.view(groups, -1, out).to(scales.dtype)  # [groups, group, out]
    return ((q - zeros[:, None, :]) * scales[:, None, :]).view(-1, out)


def int4_matmul_torch(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                      zeros: torch.Tensor) -> torch.Tensor:
    """x [rows, in] -> [rows, out]: dequantize, then one matmul."""
    return x @ dequantize_int4(qweight, scales, zeros).to(x.dtype)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@cache
def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


@dataclass(frozen=True)
class Int4Tiles:
    """How one call is cut into programs (the kernel's compile keys are block_m, block_n, unpack_words)."""

    block_m: int  # rows per program: 16 or 64, so that row counts share a compile
    block_n: int  # output columns per program
    groups_per_split: int  # input groups each program sums (fewer than all: the input is split)
    # load each packed word once and unpack it in registers, else once per input row through
    # the cache: for sm_90 the first compiles to 29 cp.async and 26 ld.shared per [128, 64] group
    # tile, the second to 197 and 86 (Triton 3.6 PTX; the GPU tiling sweep times both)
    unpack_words: bool


def tile_config(rows: int, out: int, in_features: int, group: int, num_sms: int,
                programs_per_sm: int = 2, block_n: int = 64, unpack_words: bool = True) -> Int4Tiles:
    """The tiles for a call: the input split until there are about `programs_per_sm` programs per SM
    (0: never split)."""
    block_m = 16 if rows <= 16 else 64
    tiles = _cdiv(out, block_n) * _cdiv(rows, block_m)
    num_groups = in_features // group
    split = max(1, min(num_groups, _cdiv(programs_per_sm * num_sms, tiles)))
    return Int4Tiles(block_m, block_n, _cdiv(num_groups, split), unpack_words)


def int4_matmul_triton(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                       zeros: torch.Tensor, tiles: Int4Tiles | None = None) -> torch.Tensor:
    """x [rows, in] -> [rows, out] in x's dtype. `tiles` (for tuning) overrides tile_config
    and runs the fused kernel at any row count."""
    rows, in_features = x.shape
    num_groups, out = scales.shape
    group = in_features // num_groups
    if rows > FUSED_MAX_ROWS and tiles is None:
        return x @ dequantize_int4_triton(qweight, scales, zeros, x.dtype)
    x = x.contiguous()
    tiles = tiles or tile_config(rows, out, in_features, group, _num_sms(x.device))
    splits = _cdiv(num_groups, tiles.groups_per_split)
    y = x.new_empty(rows, out)
    # the splits add into a float32 workspace that is all zeros between calls
    sums = _workspace(x.device, rows, out) if splits > 1 else y
    grid = (_cdiv(out, tiles.block_n), splits, _cdiv(rows, tiles.block_m))
    _int4_matmul_kernel[grid](x, qweight, scales, zeros, sums, rows, out, num_groups, tiles.groups_per_split,
                              GROUP=group, BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, ATOMIC=splits > 1,
                              UNPACK_WORDS=tiles.unpack_words, IEEE=x.dtype == torch.float32, num_warps=4,
                              num_stages=3)
    if splits > 1:  # one pass: the sums to y in x's dtype, and the workspace back to zeros
        _take_sums_kernel[(_cdiv(rows * out, TAKE_BLOCK),)](sums, y, rows * out, BLOCK=TAKE_BLOCK)
    return y


TAKE_BLOCK = 1024
_WORKSPACES: dict[tuple[torch.device, int], torch.Tensor] = {}


def _workspace(device: torch.device, rows: int, out: int) -> torch.Tensor:
    """A float32 [rows, out] view of the zeroed workspace for `out` columns on `device` (one per
    width: calls on a device run one after another, each leaving it zeroed). Made on the first
    call, which is an eager warm-up before any CUDA graph capture."""
    key = (device, out)
    if key not in _WORKSPACES or _WORKSPACES[key].shape[0] < rows:  # more rows: tuning calls only
        _WORKSPACES[key] = torch.zeros(max(rows, FUSED_MAX_ROWS), out, dtype=torch.float32, device=device)
    return _WORKSPACES[key][:rows]


def dequantize_int4_triton(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                           dtype: torch.dtype) -> torch.Tensor:
    """The weight [in, out] in `dtype`, one pass: half a byte read and two written per weight."""
    num_groups, out = scales.shape
    in_features = qweight.shape[0] * 8
    weight = torch.empty(in_features, out, dtype=dtype, device=qweight.device)
    grid = (num_groups, _cdiv(out, DEQUANT_BLOCK_N))
    _dequantize_kernel[grid](qweight, scales, zeros, weight, out, GROUP=in_features // num_groups,
                             BLOCK_N=DEQUANT_BLOCK_N)
    return weight


DEQUANT_BLOCK_N = 128


@triton.jit
def _codes(qweight_ptr, g, offs_n, mask_n, out, GROUP: tl.constexpr, BLOCK_N: tl.constexpr,
           UNPACK_WORDS: tl.constexpr):
    """q[g * GROUP : (g + 1) * GROUP, offs_n], int32 values 0..15 (masked columns: 0)."""
    if UNPACK_WORDS:  # [GROUP / 8, BLOCK_N] words, each value to its own row
        offs_w = g * (GROUP // 8) + tl.arange(0, GROUP // 8)
        words = tl.load(qweight_ptr + offs_w[:, None] * out + offs_n[None, :], mask=mask_n[None, :], other=0)
        q = tl.reshape((words[:, None, :] >> (tl.arange(0, 8) * 4)[None, :, None]) & 0xF, (GROUP, BLOCK_N))
    else:  # each row loads its word (eight rows read the same one, from the cache)
        offs_k = g * GROUP + tl.arange(0, GROUP)
        packed = tl.load(qweight_ptr + (offs_k // 8)[:, None] * out + offs_n[None, :], mask=mask_n[None, :],
                         other=0)
        q = (packed >> ((offs_k % 8) * 4)[:, None]) & 0xF
    return q


@triton.jit(do_not_specialize=["rows", "groups_per_split"])
def _int4_matmul_kernel(x_ptr, qweight_ptr, scales_ptr, zeros_ptr, y_ptr, rows, out, num_groups, groups_per_split,
                        GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ATOMIC: tl.constexpr,
                        UNPACK_WORDS: tl.constexpr, IEEE: tl.constexpr):
    """One [BLOCK_M, BLOCK_N] tile of y over groups [split * groups_per_split, next split).

    Scale and zero point are constant within a group, so x @ W over a group is
    (x @ q - sum(x) * zero) * scale: the inner product runs on the 4-bit codes themselves
    (exact in any float type) and the group's parameters touch only the [BLOCK_M, BLOCK_N]
    partial sums, not every weight: at batch 1 unpacking is then the kernel's only
    per-weight arithmetic."""
    offs_m = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < rows, offs_n < out
    in_features = num_groups * GROUP
    first = tl.program_id(1) * groups_per_split
    last = tl.minimum(first + groups_per_split, num_groups)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for g in range(first, last):
        k = g * GROUP + tl.arange(0, GROUP)
        a = tl.load(x_ptr + offs_m[:, None] * in_features + k[None, :], mask=mask_m[:, None], other=0.0)
        q = _codes(qweight_ptr, g, offs_n, mask_n, out, GROUP, BLOCK_N, UNPACK_WORDS)
        scale = tl.load(scales_ptr + g * out + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        zero = tl.load(zeros_ptr + g * out + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        x_sum = tl.sum(a.to(tl.float32), axis=1)
        codes = q.to(tl.float32).to(a.dtype)  # (int to bfloat16 in two steps: the interpreter has no direct cast)
        if IEEE:  # float32 activations: no TF32 rounding, like torch's default float32 matmul
            part = tl.dot(a, codes, input_precision="ieee")
        else:
            part = tl.dot(a, codes)
        acc += (part - x_sum[:, None] * zero[None, :]) * scale[None, :]
    y_ptrs = y_ptr + offs_m[:, None] * out + offs_n[None, :]
    mask = mask_m[:, None] & mask_n[None, :]
    if ATOMIC:
        tl.atomic_add(y_ptrs, acc, mask=mask, sem="relaxed")
    else:
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dequantize_kernel(qweight_ptr, scales_ptr, zeros_ptr, w_ptr, out, GROUP: tl.constexpr, BLOCK_N: tl.constexpr):
    """One group of rows and BLOCK_N columns of the dequantized weight, (q - zero) * scale
    rounded once to w's dtype."""
    g = tl.program_id(0)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < out
    q = _codes(qweight_ptr, g, offs_n, mask_n, out, GROUP, BLOCK_N, False)
    scale = tl.load(scales_ptr + g * out + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    zero = tl.load(zeros_ptr + g * out + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    w = (q.to(tl.float32) - zero[None, :]) * scale[None, :]
    offs_k = g * GROUP + tl.arange(0, GROUP)
    tl.store(w_ptr + offs_k[:, None] * out + offs_n[None, :], w.to(w_ptr.dtype.element_ty), mask=mask_n[None, :])


@triton.jit
def _take_sums_kernel(sums_ptr, y_ptr, n, BLOCK: tl.constexpr):
    """y = sums in y's dtype, and sums = 0 for the next call."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    total = tl.load(sums_ptr + offs, mask=mask, other=0.0)
    tl.store(y_ptr + offs, total.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(sums_ptr + offs, tl.zeros_like(total), mask=mask)
