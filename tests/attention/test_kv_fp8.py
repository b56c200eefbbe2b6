"""FP8 (E4M3) KV cache: storing quantizes, the paged kernels dequantize, both backends agree.

On a CPU-only machine the Triton kernels run in the interpreter (tests/ops/triton_interpret.py).
"""

from __future__ import annotations

import pytest
import torch
from tests.ops import triton_interpret

DEVICE = triton_interpret.setup()

from kvserve.attention import triton_kernels as kernels  # noqa: E402
from kvserve.attention.kv_format import FP8_MAX, KVScales, quantize_fp8  # noqa: E402
from kvserve.attention.backend import write_kv  # noqa: E402
from kvserve.attention.torch_backend import TorchAttentionBackend  # noqa: E402
from kvserve.attention.triton_backend import TritonAttentionBackend  # noqa: E402
from tests.attention.test_triton_attention import make_step, rel_err  # noqa: E402

FP8 = torch.float8_e4m3fn
SCALES = KVScales(k=0.02, v=0.5)  # not 1.0: a scale applied twice, or not at all, shows
# E4M3 keeps 3 mantissa bits: rounding to nearest is off by at most half a step, 2^-4 of
# the value; below 2^-6 (subnormals) the step is 2^-9, so add half of it, times the scale
E4M3_REL, E4M3_SUBNORMAL_HALF_STEP = 2.0 ** -4, 2.0 ** -10
# attention over an FP8 cache vs the float32 cache, relative L2: each stored K and V is off by
# up to 2^-4 (3.6% RMS for random values); measured 2.8-4.0% on these (fixed-seed) batches
FP8_ATTENTION_TOL = 0.06


def wide_values(n: int, heads: int, dim: int, seed: int) -> torch.Tensor:
    """Values over many binades (1e-4 .. 1e3 in magnitude), both signs."""
    g = torch.Generator().manual_seed(seed)
    magnitude = 10.0 ** (torch.rand(n, heads, dim, generator=g) * 7 - 4)
    return magnitude * torch.randn(n, heads, dim, generator=g).sign()


def test_store_round_trip_error_is_within_e4m3_precision():
    num_blocks, block_size, heads, dim = 4, 16, 2, 40  # 40: a padded head axis
    k = wide_values(50, heads, dim, seed=1) * SCALES.k
    v = wide_values(50, heads, dim, seed=2) * SCALES.v
    slots = torch.randperm(num_blocks * block_size, generator=torch.Generator().manual_seed(0))[:50]
    cache = torch.zeros(2, num_blocks, block_size, heads, dim, dtype=FP8, device=DEVICE)
    kernels.store_kv(k.to(DEVICE), v.to(DEVICE), cache, slots.to(DEVICE), SCALES)
    for half, x, scale in ((0, k, SCALES.k), (1, v, SCALES.v)):
        back = cache[half].view(-1, heads, dim)[slots.to(DEVICE)].float().cpu() * scale
        inside = x.abs() <= FP8_MAX * scale
        err = (back - x).abs()
        assert (err[inside] <= E4M3_REL * x.abs()[inside] + E4M3_SUBNORMAL_HALF_STEP * scale).all()
        # past the range: saturated at ±448 * scale, never NaN
        assert torch.equal(back[~inside], (FP8_MAX * scale) * x[~inside].sign())
        assert (~inside).any() and inside.any()


def test_triton_store_writes_the_same_bytes_as_the_torch_path():
    k, v = wide_values(20, 4, 64, seed=3), wide_values(20, 4, 64, seed=4)
    slots = torch.arange(20) * 3 % 64
    by_kernel = torch.zeros(2, 4, 16, 4, 64, dtype=FP8, device=DEVICE)
    by_torch = torch.zeros(2, 4, 16, 4, 64, dtype=FP8)
    kernels.store_kv(k.to(DEVICE), v.to(DEVICE), by_kernel, slots.to(DEVICE), SCALES)
    write_kv(k, v, by_torch, slots, SCALES)
    assert torch.equal(by_kernel.cpu().view(torch.uint8), by_torch.view(torch.uint8))


def fp8_step(seqs, **shape):
    """make_step's inputs twice: with its float32 cache, and with that cache stored as FP8."""
    q, k, v, cache, meta = make_step(seqs, **shape)
    cache = cache * 0.5  # keys and values the size a model's are
    fp8 = torch.stack([quantize_fp8(cache[0], SCALES.k), quantize_fp8(cache[1], SCALES.v)])
    return q, k, v, cache, fp8, meta


BATCHES = {
    "decode with splits": ([(40, 1), (0, 1), (300, 1), (15, 1)], 4),
    "prefill, prefix hit, chunk": ([(0, 21), (32, 7), (17, 12)], 132),
    "mixed": ([(33, 1), (0, 19), (70, 1), (16, 9)], 132),
}


@pytest.mark.parametrize("batch", BATCHES)
def test_fp8_attention_is_close_to_the_float32_cache_and_both_backends_agree(batch):
    seqs, num_sms = BATCHES[batch]
    q, k, v, cache, fp8, meta = fp8_step(seqs, num_heads=8, num_kv_heads=2)
    exact = TorchAttentionBackend().forward(q, k, v, cache, meta, 0.3)
    fp8_torch, fp8_triton = fp8.clone(), fp8.clone()
    by_torch = TorchAttentionBackend(SCALES).forward(q, k, v, fp8_torch, meta, 0.3)
    by_triton = TritonAttentionBackend(num_sms=num_sms, kv_scales=SCALES).forward(q, k, v, fp8_triton, meta, 0.3)
    assert torch.equal(fp8_torch.view(torch.uint8), fp8_triton.view(torch.uint8))
    assert rel_err(by_triton, by_torch) < 1e-5  # the same dequantized values, float32 math
    assert 1e-4 < rel_err(by_triton, exact) < FP8_ATTENTION_TOL  # quantized, and not by much


def test_graph_decode_step_skips_padding_rows_of_an_fp8_cache():
    q, k, v, cache, fp8, meta = fp8_step([(40, 1), (9, 1)])
    pad = 2  # rows a captured graph adds: slot -1 (no write), seq_len 0 (zeros out)
    q, k, v = (torch.cat([t, torch.ones(pad, *t.shape[1:], device=t.device)]) for t in (q, k, v))
    slots = torch.cat([meta.slot_mapping, torch.full((pad,), -1, device=q.device)])
    seq_lens = torch.cat([meta.seq_lens, torch.zeros(pad, dtype=torch.int32, device=q.device)])
    tables = torch.cat([meta.block_tables, torch.zeros(pad, meta.block_tables.shape[1], dtype=torch.int32,
                                                       device=q.device)])
    before = fp8.clone()
    backend = TritonAttentionBackend(num_sms=4, kv_scales=SCALES)
    out = backend.decode_step(q, k, v, fp8, slots, tables, seq_lens, 0.3, num_splits=2)
    written = fp8.view(torch.uint8) != before.view(torch.uint8)
    assert written.sum() <= 2 * 2 * 2 * 32 and written.any()  # K and V of the 2 real rows only
    assert torch.equal(out[2:], torch.zeros_like(out[2:]))
    ref = TorchAttentionBackend(SCALES).forward(q[:2], k[:2], v[:2], before, meta, 0.3)
    assert rel_err(out[:2], ref) < 1e-5
