"""Weight-only quantization, as a transform of a loaded model (the model code stays plain).

`quantize(model, method)` replaces every projection (`nn.Linear`: qkv, o, gate|up, down,
and the LM head, tied or not; with int4 the head gets int8 on the CPU and stays as it is
on a GPU) with a module that keeps its weight in fewer bits:

- `int8`: one scale per output channel (symmetric, -127..127), `aten._weight_int8pack_mm`;
- `int4` on the CPU: groups of 32 input features (the block of GGUF's Q4_1), each with a
  scale and a minimum (w = q * scale + min, q in 0..15), `aten._weight_int4pack_mm_for_cpu`;
  on a GPU: groups of 128 with integer zero points, the layout GPTQ and AWQ checkpoints
  load into, and a Triton kernel (kvserve.models.quantization_int4);
- `fp8` (for Hopper GPUs): E4M3 weights with one scale per output channel, activations
  quantized per token on the fly, one `torch._scaled_mm` (row-wise scales, bfloat16 out).
  On the CPU the same arithmetic is emulated (the reference the GPU path is tested on).

int8 and int4 keep activations in the model's dtype; their kernels are fast for bfloat16
(on float32 activations they take a slow path: pick bfloat16 with a quantized model).
Methods are picked by name from QUANTIZERS, with the devices each runs on in DEVICES.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kvserve.models.quantization_base import QuantizedLinear
from kvserve.models.quantization_int4 import Int4GroupLinear

INT4_GROUP = 32


class Int8Linear(QuantizedLinear):
    """y = x @ (q * scale)^T + bias, q int8 [out, in], scale [out] (the activations' dtype)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__(bias)
        w = weight.detach().float()
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)  # [out]
        self.register_buffer("qweight", (w / scales[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(weight.dtype))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.qweight, self.scales)


class Int4Linear(QuantizedLinear):
    """y = x @ dequant(q)^T + bias with 4-bit q in groups of INT4_GROUP input features."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__(bias)
        out_features, in_features = weight.shape
        if in_features % INT4_GROUP:
            raise ValueError(f"int4 needs input features in groups of {INT4_GROUP}, got {in_features}")
        groups = weight.detach().float().view(out_features, in_features // INT4_GROUP, INT4_GROUP)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # [out, groups]
        scales = (high - low).clamp(min=1e-12) / 15
        q = ((groups - low[..., None]) / scales[..., None]).round().clamp(0, 15).to(torch.int32)
        self.register_buffer("qweight", pack_int4(q.view(out_features, in_features)))
        self.register_buffer("scales_and_zeros", int4_scales_and_zeros(scales, low).to(weight.dtype))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.qweight, INT4_GROUP, self.scales_and_zeros)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """q int32 [out, in] with values 0..15 -> the CPU kernel's packed layout."""
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)


def int4_scales_and_zeros(scales: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """[groups, out, 2] from per-group scales and minimums [out, groups]. The kernel computes
    (q - 8) * scale + zero, so zero = min + 8 * scale gives q * scale + min."""
    return torch.stack([scales, low + 8 * scales], dim=-1).transpose(0, 1).contiguous()


FP8_MAX = 448.0  # largest finite float8_e4m3fn


def to_fp8(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / scale as float8_e4m3fn, float32 scale) with one scale per slice along `dim`."""
    scale = x.abs().amax(dim=dim, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    return (x.float() / scale).to(torch.float8_e4m3fn), scale


class Fp8Linear(QuantizedLinear):
    """y = (q_x * s_x) @ (q_w * s_w)^T + bias: weights quantized once, per output channel;
    activations per token, each step (dynamic scales, nothing to calibrate)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__(bias)
        qweight, scale = to_fp8(weight.detach(), dim=1)
        self.register_buffer("qweight", qweight)  # [out, in] float8_e4m3fn
        self.register_buffer("weight_scale", scale.view(1, -1))  # [1, out] float32

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        qx, x_scale = to_fp8(x, dim=1)  # [T, in], [T, 1]
        if x.is_cuda:  # row-wise scales need a bfloat16 output
            return torch._scaled_mm(qx, self.qweight.t(), scale_a=x_scale, scale_b=self.weight_scale,
                                    out_dtype=torch.bfloat16).to(x.dtype)
        # the same arithmetic in float32
        return ((qx.float() * x_scale) @ (self.qweight.float() * self.weight_scale.t()).t()).to(x.dtype)


def int4_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """int4 on the device's kernel: groups of 32 for aten's CPU kernel, groups of 128
    (the GPTQ/AWQ layout, kvserve.models.quantization_int4) for the Triton kernel on a GPU."""
    return Int4GroupLinear.from_float(weight, bias) if weight.is_cuda else Int4Linear(weight, bias)


QUANTIZERS: dict[str, Callable[[torch.Tensor, torch.Tensor | None], nn.Module]] = {
    "int8": Int8Linear,
    "int4": int4_linear,
    "fp8": Fp8Linear,
}
DEVICES = {"int8": ("cpu",), "int4": ("cpu", "cuda"), "fp8": ("cuda", "cpu")}  # fp8 on the CPU: emulated, for tests


# The LM head reads every hidden feature into every logit: at 4 bits it costs the embedded
# model 9.5% perplexity, at 8 bits 0.6% (the body at 4 bits: 0.2%); llama.cpp likewise
# keeps its output layer at higher precision.
HEAD_METHOD = {"int4": "int8"}
# On a GPU int4 keeps the head in the model dtype, as GPTQ and AWQ checkpoints do (aten's
# int8 kernel is a CPU one).
FLOAT_HEAD_ON_GPU = ("int4",)


def quantize(model: nn.Module, method: str) -> nn.Module:
    """Replace the model's linear layers in place; a tied LM head gets a quantized copy of
    the embedding (the embedding lookup itself stays in the model dtype)."""
    make, make_head = QUANTIZERS[method], _head_quantizer(method, model.model.embed_tokens.weight.device)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and not (name == "lm_head" and make_head is None):
            parent, _, leaf = name.rpartition(".")
            build = make_head if name == "lm_head" else make
            setattr(model.get_submodule(parent), leaf, build(module.weight, module.bias))
    if getattr(model, "tie_word_embeddings", False) and make_head is not None:
        model.lm_head = make_head(model.model.embed_tokens.weight, None)
        model.tie_word_embeddings = False
    return model


def _head_quantizer(method: str, device: torch.device) -> Callable[..., nn.Module] | None:
    """The LM head's quantizer; None keeps the head as it is."""
    if device.type == "cuda" and method in FLOAT_HEAD_ON_GPU:
        return None
    return QUANTIZERS[HEAD_METHOD.get(method, method)]
