"""The INT4 group matmul kernel (Triton; the interpreter on the CPU) against a float reference."""

from __future__ import annotations

import pytest
import torch

from tests.ops import triton_interpret

DEVICE = triton_interpret.setup()

from kvserve.ops.int4_matmul import (  # noqa: E402
    FUSED_MAX_ROWS,
    Int4Tiles,
    dequantize_int4,
    dequantize_int4_triton,
    int4_matmul_triton,
    tile_config,
)


def _random_int4(in_features: int, out: int, group: int, seed: int = 0, dtype: torch.dtype = torch.float32):
    """Random codes, scales and zero points (in `dtype`) in the packed layout, with the float32 weight
    they stand for (written from the layout's definition, not through the module under test)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (in_features, out), generator=gen, dtype=torch.int64)
    scales = (torch.rand(in_features // group, out, generator=gen) * 0.02 + 0.001).to(dtype)
    zeros = torch.randint(0, 16, (in_features // group, out), generator=gen).to(dtype)
    words = sum(q.view(-1, 8, out)[:, j] << (4 * j) for j in range(8))  # [in / 8, out], low nibble first
    qweight = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    weight = (q.float() - zeros.float().repeat_interleave(group, 0)) * scales.float().repeat_interleave(group, 0)
    return qweight, scales, zeros, weight


@pytest.mark.parametrize("rows,in_features,out,group", [
    (1, 256, 96, 128),   # one row, several column tiles, a split input
    (5, 128, 77, 32),    # odd out: the last column tile is masked
    (16, 192, 64, 64),   # a full BLOCK_M of 16
    (40, 256, 130, 128),  # the 64-row bucket, odd out
])
def test_kernel_matches_the_float_weight(rows, in_features, out, group):
    qweight, scales, zeros, weight = _random_int4(in_features, out, group)
    x = torch.randn(rows, in_features, generator=torch.Generator().manual_seed(1))
    y = int4_matmul_triton(x.to(DEVICE), qweight.to(DEVICE), scales.to(DEVICE), zeros.to(DEVICE)).cpu()
    ref = x.double() @ weight.double()
    assert y.shape == (rows, out) and y.dtype == torch.float32
    assert ((y.double() - ref).norm() / ref.norm()) < 1e-5  # float32 throughout: summation order only


@pytest.mark.parametrize("tiles", [
    Int4Tiles(block_m=16, block_n=128, groups_per_split=1, unpack_words=True),  # words unpacked in registers
    Int4Tiles(block_m=16, block_n=32, groups_per_split=3, unpack_words=False),  # uneven last split
])
def test_every_tiling_the_gpu_tuning_tries_gives_the_same_product(tiles):
    qweight, scales, zeros, weight = _random_int4(512, 70, 64)
    x = torch.randn(7, 512, generator=torch.Generator().manual_seed(4))
    y = int4_matmul_triton(x.to(DEVICE), qweight.to(DEVICE), scales.to(DEVICE), zeros.to(DEVICE), tiles).cpu()
    ref = x.double() @ weight.double()
    assert ((y.double() - ref).norm() / ref.norm()) < 1e-5


def test_split_calls_leave_their_workspace_zeroed():
    # the same call twice, and a call of other rows between: what one leaves behind the next does not add
    qweight, scales, zeros, weight = (t.to(DEVICE) for t in _random_int4(256, 96, 64))
    x = torch.randn(9, 256, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    tiles = tile_config(9, 96, 256, 64, 4)
    assert -(-4 // tiles.groups_per_split) > 1  # split: the workspace is used
    first = int4_matmul_triton(x, qweight, scales, zeros)
    int4_matmul_triton(x[:3] * 7, qweight, scales, zeros)
    second = int4_matmul_triton(x, qweight, scales, zeros)
    assert torch.equal(first, second)
    assert ((first.double().cpu() - x.double().cpu() @ weight.double().cpu()).abs().max()) < 1e-4


def test_bfloat16_activations_are_within_the_outputs_rounding():
    qweight, scales, zeros, weight = _random_int4(256, 80, 128, dtype=torch.bfloat16)
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(2)).bfloat16()
    y = int4_matmul_triton(x.to(DEVICE), qweight.to(DEVICE), scales.to(DEVICE), zeros.to(DEVICE)).cpu()
    ref = x.double() @ weight.double()  # the codes times the bfloat16 scales, exactly
    assert y.dtype == torch.bfloat16
    # codes and activations are exact in bfloat16 and summed in float32: the output's rounding (2^-9)
    assert ((y.double() - ref).norm() / ref.norm()) < 4e-3


@pytest.mark.parametrize("tiles", [None, Int4Tiles(block_m=64, block_n=64, groups_per_split=4, unpack_words=False)])
def test_rows_above_the_fused_bucket(tiles):
    # by default: the weight dequantized by its own kernel, then one matmul; with tiles: the fused kernel
    qweight, scales, zeros, weight = _random_int4(128, 48, 32)
    x = torch.randn(FUSED_MAX_ROWS + 3, 128, generator=torch.Generator().manual_seed(3))
    y = int4_matmul_triton(x.to(DEVICE), qweight.to(DEVICE), scales.to(DEVICE), zeros.to(DEVICE), tiles).cpu()
    assert ((y.double() - x.double() @ weight.double()).norm() / y.double().norm()) < 1e-5


def test_dequantize_kernel_is_the_torch_reference():
    qweight, scales, zeros, weight = _random_int4(192, 72, 64)
    got = dequantize_int4_triton(qweight.to(DEVICE), scales.to(DEVICE), zeros.to(DEVICE), torch.float32).cpu()
    assert torch.equal(got, dequantize_int4(qweight, scales, zeros)) and torch.equal(got, weight)
    # bfloat16: one rounding of the float32 value (the interpreter's cast truncates, the GPU's rounds)
    half = dequantize_int4_triton(qweight.to(DEVICE), scales.to(DEVICE), zeros.to(DEVICE), torch.bfloat16).cpu()
    assert half.dtype == torch.bfloat16 and ((half.float() - weight).abs() <= weight.abs() * 2**-7).all()


def test_tiles_fill_the_gpu_at_batch_one_and_rows_share_a_bucket():
    # Llama-3-8B's o_proj on 132 SMs: 64 column tiles, so the input splits to give >= 2 programs per SM
    tiles = tile_config(1, 4096, 4096, 128, 132)
    assert (tiles.block_m, tiles.block_n) == (16, 64)
    assert (4096 // tiles.block_n) * -(-32 // tiles.groups_per_split) >= 2 * 132
    assert tile_config(16, 4096, 4096, 128, 132) == tiles  # one compile for rows 1..16
    assert tile_config(17, 4096, 4096, 128, 132).block_m == 64
