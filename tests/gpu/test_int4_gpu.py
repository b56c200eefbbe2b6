"""INT4 on a GPU: the Triton kernel against a float reference on Llama-3-8B's shapes, its time
per call against bf16 cuBLAS and against the HBM limit of the bytes it reads, and
`quantization="int4"` end to end against the model with the dequantized weights.

    OUT=bench-results python -m pytest -m gpu -s tests/gpu/test_int4_gpu.py

The timings replay a CUDA graph over enough copies of the layer to spill the 50 MB L2 (as a
decode step reads each layer once), so they count neither launch gaps nor cache hits.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from kvserve import LLM, SamplingParams
from kvserve.models.quantization_int4 import Int4GroupLinear
from kvserve.ops.int4_matmul import FUSED_MAX_ROWS, Int4Tiles, dequantize_int4, int4_matmul_triton, tile_config
from tests.models.test_quantization_formats import PROMPTS, checkpoints  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096)]  # (in, out): Llama-3-8B's o_proj, up_proj, down_proj
ROWS = [1, 4, 16, 64]
LARGE_ROWS = [256, 1024]  # prefill sizes: dequantize + cuBLAS against the fused kernel on 64-row tiles
HBM_BYTES_PER_S = 4.26e12  # H200 read bandwidth measured for issue 18
SPILL_BYTES = 300e6  # well above L2


def _layer(in_features: int, out: int) -> Int4GroupLinear:
    gen = torch.Generator(device="cuda").manual_seed(in_features + out)
    weight = torch.randn(out, in_features, device="cuda", generator=gen).mul_(0.02).bfloat16()
    return Int4GroupLinear.from_float(weight, None)


@pytest.mark.parametrize("in_features,out", SHAPES)
def test_kernel_matches_the_dequantized_weight(in_features, out):
    layer = _layer(in_features, out)
    weight = dequantize_int4(layer.qweight, layer.scales.float(), layer.zeros.float())  # [in, out], exact
    for rows in ROWS + LARGE_ROWS:
        x = torch.randn(rows, in_features, device="cuda").bfloat16()
        y = layer(x)
        ref = x.float() @ weight
        assert y.dtype == torch.bfloat16 and y.shape == (rows, out)
        # up to 64 rows: float32 sums of exact products, then the bfloat16 output's rounding (2^-9);
        # above: the weight rounded to bfloat16 too
        assert ((y.float() - ref).norm() / ref.norm()).item() < 5e-3, rows


SMALL = dict(gpu_memory_utilization=0.2, max_model_len=512, max_num_seqs=8)  # few graphs to capture


@pytest.mark.parametrize("variant", ["gptq-asym", "awq"])
def test_checkpoints_on_the_kernel_are_their_dequantized_twin(checkpoints, variant):
    # float32 (the tiny checkpoints' dtype): the kernel's dot in IEEE float32, cuBLAS's without TF32
    packed, ref = checkpoints[variant]
    greedy = SamplingParams(temperature=0, max_tokens=12)
    with LLM(model=str(packed), dtype="float32", **SMALL) as quant:
        got = [o.outputs[0].token_ids for o in quant.generate(PROMPTS, greedy)]
    with LLM(model=str(ref), dtype="float32", **SMALL) as plain:
        want = [o.outputs[0].token_ids for o in plain.generate(PROMPTS, greedy)]
    assert got == want


def test_int4_model_is_the_model_with_its_dequantized_weights(tiny_llama):
    prompts = PROMPTS
    greedy = SamplingParams(temperature=0, max_tokens=16)
    with LLM(model=str(tiny_llama), dtype="bfloat16", quantization="int4", **SMALL) as quant:
        model = quant.engine.core.runner.model
        assert sum(isinstance(m, Int4GroupLinear) for m in model.modules()) == 2 * 4
        assert isinstance(model.lm_head, nn.Linear)  # kept in bfloat16 on a GPU
        got = [o.outputs[0].token_ids for o in quant.generate(prompts, greedy)]  # decode through CUDA graphs
    with LLM(model=str(tiny_llama), dtype="bfloat16", enforce_eager=True, **SMALL) as plain:
        with torch.no_grad():
            for name, module in plain.engine.core.runner.model.named_modules():
                if isinstance(module, nn.Linear) and name != "lm_head":
                    module.weight.copy_(Int4GroupLinear.from_float(module.weight, None).dequantized())
        want = [o.outputs[0].token_ids for o in plain.generate(prompts, greedy)]
    assert got == want


def _microseconds_per_call(calls) -> float:
    """Mean time of one call, replaying a graph of all of them (each reads its own copy)."""
    for call in calls:
        call()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / 5 / len(calls)


def _copies(layer: Int4GroupLinear) -> list[tuple[torch.Tensor, ...]]:
    size = sum(t.numel() * t.element_size() for t in (layer.qweight, layer.scales, layer.zeros))
    return [(layer.qweight.clone(), layer.scales.clone(), layer.zeros.clone())
            for _ in range(math.ceil(SPILL_BYTES / size))]


def _time_int4(copies, x, tiles=None) -> float:
    return _microseconds_per_call([lambda c=c: int4_matmul_triton(x, *c, tiles) for c in copies])


def test_time_per_call_against_bf16_and_the_hbm_limit():
    records = []
    for in_features, out in SHAPES:
        layer = _layer(in_features, out)
        int4_copies = _copies(layer)
        bf16 = [torch.randn(in_features, out, device="cuda").bfloat16()
                for _ in range(math.ceil(SPILL_BYTES / (2 * in_features * out)))]
        int4_bytes = sum(t.numel() * t.element_size() for t in int4_copies[0])
        fused = Int4Tiles(block_m=64, block_n=64, groups_per_split=in_features // 128, unpack_words=True)
        for rows in ROWS + LARGE_ROWS:
            x = torch.randn(rows, in_features, device="cuda").bfloat16()
            records.append({
                "in": in_features, "out": out, "rows": rows,
                "int4_us": _time_int4(int4_copies, x),  # above 64 rows: dequantize, then cuBLAS
                "int4_fused_us": _time_int4(int4_copies, x, fused) if rows > FUSED_MAX_ROWS else None,
                "bf16_cublas_us": _microseconds_per_call([lambda w=w: x @ w for w in bf16]),
                "int4_hbm_limit_us": int4_bytes / HBM_BYTES_PER_S * 1e6,
                "bf16_hbm_limit_us": 2 * in_features * out / HBM_BYTES_PER_S * 1e6,
            })
        del int4_copies, bf16
    _report(records, [])  # first without the sweep, in case the sweep runs out of time
    _report(records, _tiling_sweep(), calls=False)
    at_one_row = [r for r in records if r["rows"] == 1]
    assert all(r["int4_us"] < r["bf16_cublas_us"] for r in at_one_row), at_one_row
    # the dequantizing path costs at most one extra pass (2.5 bytes a weight) where the GEMM is large
    at_1024 = [r for r in records if r["rows"] == 1024]
    assert all(r["int4_us"] < 1.5 * r["bf16_cublas_us"] for r in at_1024), at_1024


def _tiling_sweep() -> list[dict]:
    """Alternatives to the default tiles at 1 and 16 rows (what a better table would pick)."""
    results = []
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for in_features, out in SHAPES:
        copies = _copies(_layer(in_features, out))
        for rows in (1, 16):
            x = torch.randn(rows, in_features, device="cuda").bfloat16()
            for block_n in (64, 128):
                for per_sm in (0, 2, 4):  # 0: no split
                    for unpack in (False, True):
                        tiles = tile_config(rows, out, in_features, 128, sms, per_sm, block_n, unpack)
                        try:
                            us = _time_int4(copies, x, tiles)
                        except Exception as exc:  # a tiling this Triton cannot compile: reported, not fatal
                            us = f"failed: {type(exc).__name__}"
                        results.append({"in": in_features, "out": out, "rows": rows, "block_n": block_n,
                                        "programs_per_sm": per_sm, "unpack_words": unpack, "us": us})
        del copies
    return results


def _report(records: list[dict], tuning: list[dict], calls: bool = True) -> None:
    out = Path(os.environ.get("OUT", "bench-results")) / "int4_kernel.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"calls": records, "tiling": tuning}, indent=1))
    if calls:
        _print_calls(records)
    _print_tiling(tuning)


def _print_calls(records: list[dict]) -> None:
    print(f"\nint4 kernel  {'in x out':>12} {'rows':>4} {'int4 us':>8} {'limit':>6} {'of limit':>8} "
          f"{'bf16 us':>8} {'limit':>6} {'speed-up':>8}")
    for r in records:
        fused = f"  (fused kernel {r['int4_fused_us']:.1f} us)" if r["int4_fused_us"] else ""
        print(f"int4 kernel  {r['in']:>5} x {r['out']:<5} {r['rows']:>4} {r['int4_us']:>8.1f} "
              f"{r['int4_hbm_limit_us']:>6.1f} {r['int4_hbm_limit_us'] / r['int4_us']:>7.0%} "
              f"{r['bf16_cublas_us']:>8.1f} {r['bf16_hbm_limit_us']:>6.1f} {r['bf16_cublas_us'] / r['int4_us']:>7.2f}x"
              f"{fused}")


def _print_tiling(tuning: list[dict]) -> None:
    timed = [t for t in tuning if isinstance(t["us"], float)]
    for in_features, out in SHAPES:
        for rows in (1, 16):
            mine = [t for t in timed if (t["in"], t["out"], t["rows"]) == (in_features, out, rows)]
            if mine:
                best = min(mine, key=lambda t: t["us"])
                print(f"int4 tiling  {in_features:>5} x {out:<5} {rows:>4} best {best['us']:.1f} us: "
                      f"block_n {best['block_n']}, {best['programs_per_sm']}/SM, unpack_words {best['unpack_words']}")
    failed = {(t["block_n"], t["unpack_words"]) for t in tuning if not isinstance(t["us"], float)}
    if failed:
        print(f"int4 tiling  failed to run: {sorted(failed)}")
