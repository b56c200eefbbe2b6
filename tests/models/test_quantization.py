"""Weight-only int8 / int4 on the CPU: the layers against their dequantized weights, and a
quantized model against the unquantized one on the same prompts."""

import pytest
import torch
from torch import nn

from kvserve import LLM, SamplingParams
from kvserve.config import ConfigError
from kvserve.models.quantization import INT4_GROUP, Int4Linear, Int8Linear


def _linear(out_features=96, in_features=128, bias=True):
    torch.manual_seed(0)
    layer = nn.Linear(in_features, out_features, bias=bias)
    layer.weight.data.normal_(0, 0.05)
    return layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_layer_is_its_dequantized_weight(dtype):
    layer = _linear().to(dtype)
    q = Int8Linear(layer.weight, layer.bias)
    w = q.qweight.float() * q.scales.float()[:, None]
    step = q.scales.float().max()
    scale_rounding = 0.0 if dtype == torch.float32 else 127 * step * 2**-8  # bfloat16 keeps 8 bits of a scale
    assert (w - layer.weight.float()).abs().max() <= step / 2 + scale_rounding + 1e-6
    x = torch.randn(3, 5, 128).to(dtype)
    ref = x.float() @ w.T + layer.bias.float()
    out = q(x)
    assert out.shape == (3, 5, 96) and out.dtype == dtype
    assert ((out.float() - ref).norm() / ref.norm()) < (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_layer_is_its_dequantized_weight(dtype):
    layer = _linear(bias=False).to(dtype)
    q = Int4Linear(layer.weight, None)
    groups = layer.weight.float().view(96, -1, INT4_GROUP)
    step = ((groups.amax(-1) - groups.amin(-1)) / 15).max()
    x = torch.randn(4, 128).to(dtype)
    exact = x.float() @ layer.weight.float().T
    out = q(x).float()
    # error bounded by half a quantization step per weight
    assert (out - exact).abs().max() <= x.float().abs().sum(-1).max() * step / 2 * 1.05
    assert ((out - exact).norm() / exact.norm()) < 0.1


def test_int4_refuses_input_features_outside_its_groups():
    with pytest.raises(ValueError, match="groups of 32"):
        Int4Linear(torch.randn(8, 40), None)


def _dequantized(weight: torch.Tensor, method: str) -> torch.Tensor:
    """The weight each method stores, rounded back to floats (written out independently)."""
    w = weight.float()
    if method == "int8":
        scales = w.abs().amax(1, keepdim=True) / 127
        return (w / scales).round().clamp(-127, 127) * scales
    groups = w.view(w.shape[0], -1, INT4_GROUP)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scales = (high - low) / 15
    return ((groups - low) / scales).round().clamp(0, 15).mul(scales).add(low).view_as(w)


PROMPTS = ["The capital of France is", "Hello world! How are you", "def add(a, b):"]
FIRST_TOKEN = SamplingParams(temperature=0, max_tokens=1, logprobs=5)


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_quantized_model_equals_the_model_with_dequantized_weights(tiny_llama, method):
    # the plumbing exactly: every projection and the LM head quantized, nothing else changed
    quant = LLM(model=str(tiny_llama), dtype="float32", kv_cache_gib=0.01, quantization=method)
    assert not any(isinstance(m, nn.Linear) for m in quant.engine.core.runner.model.modules())
    ref = LLM(model=str(tiny_llama), dtype="float32", kv_cache_gib=0.01)
    with torch.no_grad():
        for name, module in ref.engine.core.runner.model.named_modules():
            if isinstance(module, nn.Linear):  # int4's LM head is int8
                module.weight.copy_(_dequantized(module.weight, "int8" if name == "lm_head" else method))
    for q, r in zip(quant.generate(PROMPTS, FIRST_TOKEN), ref.generate(PROMPTS, FIRST_TOKEN)):
        assert q.outputs[0].token_ids == r.outputs[0].token_ids
        got, want = q.outputs[0].logprobs[0], r.outputs[0].logprobs[0]
        assert got.keys() == want.keys()
        assert max(abs(got[t].logprob - want[t].logprob) for t in want) < 1e-4


def test_int8_with_tied_embeddings_stays_close_to_the_plain_model(tiny_qwen3):
    # the tied LM head gets a quantized copy; the embedding lookup stays exact
    plain = LLM(model=str(tiny_qwen3), dtype="float32", kv_cache_gib=0.01).generate(PROMPTS, FIRST_TOKEN)
    quant = LLM(model=str(tiny_qwen3), dtype="float32", kv_cache_gib=0.01, quantization="int8")
    for p, q in zip(plain, quant.generate(PROMPTS, FIRST_TOKEN)):
        assert p.outputs[0].token_ids == q.outputs[0].token_ids
        want, got = p.outputs[0].logprobs[0], q.outputs[0].logprobs[0]
        assert max(abs(want[t].logprob - got[t].logprob) for t in want.keys() & got.keys()) < 0.1


def test_unknown_quantization_is_a_config_error(tiny_llama):
    with pytest.raises(ConfigError, match="quantization must be one of"):
        LLM(model=str(tiny_llama), quantization="int3")


def test_fp8_layer_emulated_on_the_cpu_is_within_e4m3_rounding():
    from kvserve.models.quantization import Fp8Linear

    layer = _linear().to(torch.bfloat16)
    x = torch.randn(6, 128).to(torch.bfloat16)
    exact = x.float() @ layer.weight.float().T + layer.bias.float()
    out = Fp8Linear(layer.weight, layer.bias)(x)
    assert out.dtype == torch.bfloat16 and out.shape == (6, 96)
    assert ((out.float() - exact).norm() / exact.norm()) < 0.06  # two E4M3 roundings (3 mantissa bits)


def test_int_quantization_on_a_gpu_and_fp8_elsewhere_are_refused_by_name(tiny_llama):
    # the device check comes before loading; on this CPU-only machine int8 runs and fp8 is emulated
    llm = LLM(model=str(tiny_llama), dtype="bfloat16", kv_cache_gib=0.01, quantization="fp8")
    assert llm.generate("Hello", SamplingParams(max_tokens=2))[0].outputs[0].token_ids
