"""GPTQ and AWQ checkpoints: a tiny random Llama quantized here (round-to-nearest, groups of 128)
and packed in each published format, loaded by kvserve against the same model with the
dequantized weights in float32.

The packing below is written from the formats' public descriptions (see
kvserve/models/quantization_formats.py for the layouts), independently of the code under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kvserve import LLM, SamplingParams
from kvserve.models.loader import ModelLoadError
from kvserve.models.quantization_int4 import Int4GroupLinear
from tests.conftest import build_model

GROUP = 128
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # value p of a word holds column 8c + AWQ_ORDER[p]
PROMPTS = ["The capital of France is", "Hello world! How are you", "def add(a, b):"]


def _rtn(w: torch.Tensor, sym: bool):
    """w [in, out] -> q [in, out] in 0..15, zeros [G, out] int, scales [G, out] float16."""
    g = w.view(-1, GROUP, w.shape[1])
    if sym:
        scales = (g.abs().amax(1) / 7.5).clamp(min=1e-6).half()
        zeros = torch.full_like(scales, 8, dtype=torch.int64)
    else:
        low, high = g.amin(1).clamp(max=0), g.amax(1).clamp(min=0)
        scales = ((high - low) / 15).clamp(min=1e-6).half()
        zeros = (-low / scales.float()).round().clamp(1, 15).long()  # >= 1: GPTQ v1 stores zero - 1
    q = (g / scales.float()[:, None] + zeros[:, None]).round().clamp(0, 15).long().view_as(w)
    return q, zeros, scales


def _words(values: torch.Tensor) -> torch.Tensor:
    """[..., 8] ints 0..15 -> int32 words, value p in bits 4p..4p+3."""
    word = sum(values[..., p] << (4 * p) for p in range(8))
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


def _gptq(q, zeros, scales):
    in_features, out = q.shape
    return {"qweight": _words(q.view(in_features // 8, 8, out).transpose(1, 2)),
            "qzeros": _words((zeros - 1).view(zeros.shape[0], out // 8, 8)), "scales": scales,
            "g_idx": (torch.arange(in_features) // GROUP).to(torch.int32),
            "bias": torch.zeros(out, dtype=torch.float16)}  # GPTQ exporters save one for every projection


def _awq(q, zeros, scales):
    def interleave(v):  # [rows, out] -> [rows, out / 8, 8] in the words' value order
        return v.view(v.shape[0], -1, 8)[..., list(AWQ_ORDER)]

    return {"qweight": _words(interleave(q)), "qzeros": _words(interleave(zeros)), "scales": scales}


def _quantized_copy(base: Path, out: Path, method: str, sym: bool, quant_config: dict) -> Path:
    """Write `out` (the packed checkpoint); return the directory of its dequantized float twin."""
    ref = out.parent / f"{out.name}-dequantized"
    for d in (out, ref):
        shutil.copytree(base, d)
    weights = load_file(base / "model.safetensors")
    packed, dequantized = {}, {}
    for name, w in weights.items():
        module, _, leaf = name.rpartition(".")
        if not module.endswith(PROJECTIONS):
            packed[name] = dequantized[name] = w
            continue
        q, zeros, scales = _rtn(w.t().contiguous(), sym)
        packed.update({f"{module}.{k}": v for k, v in (_gptq if method == "gptq" else _awq)(q, zeros, scales).items()})
        g = scales.shape[0]
        dequant = (q.view(g, GROUP, -1) - zeros[:, None]) * scales.float()[:, None]
        dequantized[name] = dequant.view_as(q).t().contiguous()
    save_file(packed, out / "model.safetensors")
    save_file(dequantized, ref / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "quantization_config": quant_config}))
    return ref


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("int4")
    base = build_model("llama", root / "float", hidden_size=128, intermediate_size=256)
    gptq = {"quant_method": "gptq", "bits": 4, "group_size": GROUP, "desc_act": False, "sym": True}
    awq = {"quant_method": "awq", "bits": 4, "group_size": GROUP, "zero_point": True, "version": "gemm"}
    return {
        "gptq-sym": (root / "gptq-sym", _quantized_copy(base, root / "gptq-sym", "gptq", True, gptq)),
        "gptq-asym": (root / "gptq-asym", _quantized_copy(base, root / "gptq-asym", "gptq", False,
                                                          {**gptq, "sym": False})),
        "awq": (root / "awq", _quantized_copy(base, root / "awq", "awq", False, awq)),
    }


def _prefill_logits(llm: LLM, ids: torch.Tensor) -> torch.Tensor:
    runner = llm.engine.core.runner
    with torch.inference_mode():
        return runner.model.compute_logits(runner.prefill_forward(ids, [ids.numel()]))


@pytest.mark.parametrize("variant", ["gptq-sym", "gptq-asym", "awq"])
def test_checkpoint_is_the_model_with_its_dequantized_weights(checkpoints, variant):
    packed, ref = checkpoints[variant]
    with LLM(model=str(packed), dtype="float32", kv_cache_gib=0.01) as quant, \
            LLM(model=str(ref), dtype="float32", kv_cache_gib=0.01) as plain:
        modules = list(quant.engine.core.runner.model.modules())
        assert sum(isinstance(m, Int4GroupLinear) for m in modules) == 2 * 4  # qkv, o, gate|up, down per layer
        ids = torch.randint(0, quant.engine.core.info.vocab_size, (24,), generator=torch.Generator().manual_seed(0))
        got, want = _prefill_logits(quant, ids), _prefill_logits(plain, ids)
        # The same float32 weights ((q - z) * s with the stored float16 scales) on both sides:
        # only the matmuls' summation order differs, a few float32 ulps.
        assert ((got - want).norm() / want.norm()) < 1e-5
        greedy = SamplingParams(temperature=0, max_tokens=12)
        for q, r in zip(quant.generate(PROMPTS, greedy), plain.generate(PROMPTS, greedy)):
            assert q.outputs[0].text == r.outputs[0].text and len(q.outputs[0].token_ids) == 12


def _with_config(checkpoints, tmp_path: Path, **changes) -> Path:
    d = tmp_path / "variant"
    shutil.copytree(checkpoints["gptq-sym"][0], d)
    config = json.loads((d / "config.json").read_text())
    config["quantization_config"].update(changes)
    (d / "config.json").write_text(json.dumps(config))
    return d


@pytest.mark.parametrize("changes,field", [
    ({"bits": 8}, "quantization_config.bits"),
    ({"group_size": 256}, "quantization_config.group_size"),
    ({"quant_method": "bitsandbytes"}, "quantization_config.quant_method"),
    ({"checkpoint_format": "marlin"}, "quantization_config.checkpoint_format"),
])
def test_unsupported_variants_fail_at_load_naming_the_field(checkpoints, tmp_path, changes, field):
    with pytest.raises(ModelLoadError, match=field.replace(".", r"\.")):
        LLM(model=str(_with_config(checkpoints, tmp_path, **changes)), dtype="float32", kv_cache_gib=0.01)


def test_reordered_groups_of_desc_act_fail_naming_g_idx(checkpoints, tmp_path):
    d = _with_config(checkpoints, tmp_path, desc_act=True)
    weights = load_file(d / "model.safetensors")
    key = "model.layers.0.mlp.down_proj.g_idx"
    weights[key] = weights[key].flip(0).contiguous()
    save_file(weights, d / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"down_proj\.g_idx .*desc_act"):
        LLM(model=str(d), dtype="float32", kv_cache_gib=0.01)


def test_a_nonzero_bias_the_architecture_lacks_fails_at_load(checkpoints, tmp_path):
    d = _with_config(checkpoints, tmp_path)
    weights = load_file(d / "model.safetensors")
    weights["model.layers.1.self_attn.o_proj.bias"][3] = 0.5
    save_file(weights, d / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"o_proj\.bias is not zero"):
        LLM(model=str(d), dtype="float32", kv_cache_gib=0.01)


def test_round_to_nearest_at_load_is_within_half_a_step():
    # `--quantization int4` on a GPU: the same module, filled from a float weight
    torch.manual_seed(0)
    weight = torch.randn(72, 256) * 0.05  # an output count that is no multiple of 8
    layer = Int4GroupLinear.from_float(weight, None)
    assert layer.group_size == GROUP and layer.qweight.shape == (32, 72)
    steps = layer.scales.repeat_interleave(GROUP, 0).t()  # [out, in]
    assert ((layer.dequantized() - weight).abs() <= steps / 2 + 1e-7).all()
    x = torch.randn(3, 256)
    assert torch.allclose(layer(x), x @ layer.dequantized().t(), atol=1e-5)


def test_round_to_nearest_takes_smaller_groups_where_128_does_not_divide_the_input():
    assert Int4GroupLinear.from_float(torch.randn(16, 64), None).group_size == 64
    assert Int4GroupLinear.from_float(torch.randn(16, 96), None).group_size == 32
    with pytest.raises(ValueError, match="groups of 128"):
        Int4GroupLinear.from_float(torch.randn(16, 40), None)
