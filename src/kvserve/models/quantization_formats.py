"""GPTQ and AWQ checkpoints (4 bits, groups of 32/64/128 inputs), repacked at load into Int4GroupLinear.

What config.json's `quantization_config` may say, and the tensors each projection then has
(`in` inputs, `out` outputs, G = in / group_size groups; all packed words int32, eight
4-bit values to a word, value p in bits 4p..4p+3):

- GPTQ (`quant_method` "gptq", `desc_act` false, `sym` true or false):
  `qweight` [in / 8, out], packed along the input (value p of word [i, o] is q[8i + p, o]);
  `qzeros` [G, out / 8], packed along the output (value p of word [g, c] is the zero
  point of column 8c + p); `scales` [G, out] float16; `g_idx` [in], the group of each
  input (i // group_size unless the checkpoint was reordered by `desc_act`). With
  `checkpoint_format` "gptq" (the default) the stored zero point is one less than the
  zero point used ("gptq_v2" stores it as is). W[k, o] = (q[k, o] - z[g(k), o]) * s[g(k), o].
  Exporters also save a `bias` for every projection: all zeros where the architecture has
  none, accepted and dropped.
- AWQ (`quant_method` "awq", `version` "gemm", `zero_point` true): `qweight` [in, out / 8]
  packed along the output, `qzeros` [G, out / 8], `scales` [G, out]. Values are
  interleaved: value p of a word holds column 8c + AWQ_ORDER[p]. Zero points as is.
  `modules_to_not_convert` names projections left in float.

Both dequantize to W = (q - z) * s; only the packing differs, so both repack into the one
layout of kvserve.ops.int4_matmul (GPTQ's qweight unchanged). The LM head and embeddings
stay float (the formats' own practice). Projections we merge (qkv, gate|up) concatenate
their parts along the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kvserve.models.quantization_int4 import Int4GroupLinear, pack_along_input
from kvserve.ops.int4_matmul import GROUP_SIZES

GPTQ_ORDER = (0, 1, 2, 3, 4, 5, 6, 7)
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # the column held by each value of a word
GPTQ_ZERO_OFFSETS = {"gptq": 1, "gptq_v2": 0}  # by `checkpoint_format`


@dataclass(frozen=True)
class Int4Format:
    """A checkpoint's int4 format, checked: one of the variants we load."""

    method: str  # "gptq" | "awq"
    group_size: int  # inputs per scale and zero point
    zero_offset: int  # added to a stored zero point
    keep_float: tuple[str, ...]  # projections whose names contain one of these stay float


def int4_format(hf_config: Any) -> Int4Format | None:
    """The format of config.json's `quantization_config`; None without one. ValueError, naming
    the field, for a variant we do not load."""
    config = getattr(hf_config, "quantization_config", None)
    if config is None:
        return None
    config = config if isinstance(config, dict) else config.to_dict()
    method = str(config.get("quant_method", "")).lower()
    if method not in ("gptq", "awq"):
        raise ValueError(f"quantization_config.quant_method {method!r} is not supported (gptq and awq are)")
    _require(config, "bits", config.get("bits", config.get("w_bit")) == 4, "4")
    group_size = config.get("group_size", config.get("q_group_size"))
    _require(config, "group_size", group_size in GROUP_SIZES, " or ".join(map(str, GROUP_SIZES)))
    if method == "awq":
        _require(config, "version", str(config.get("version", "gemm")).lower() == "gemm", "'gemm'")
        _require(config, "zero_point", config.get("zero_point", True) is True, "true")
        return Int4Format("awq", group_size, 0, tuple(config.get("modules_to_not_convert") or ()))
    fmt = config.get("checkpoint_format", "gptq")
    _require(config, "checkpoint_format", fmt in GPTQ_ZERO_OFFSETS, " or ".join(map(repr, GPTQ_ZERO_OFFSETS)))
    _require(config, "lm_head", not config.get("lm_head", False), "false")
    return Int4Format("gptq", group_size, GPTQ_ZERO_OFFSETS[fmt], ())


def _require(config: dict, field: str, ok: bool, supported: str) -> None:
    if not ok:
        raise ValueError(f"quantization_config.{field} = {config.get(field)!r} is not supported "
                         f"(int4 loads {field} {supported})")


def checkpoint_shapes(fmt: Int4Format, in_features: int, out: int) -> dict[str, tuple[int, ...]]:
    """The tensors of one projection in the checkpoint, by name suffix, with their shapes."""
    groups = in_features // fmt.group_size
    if fmt.method == "awq":
        return {"qweight": (in_features, out // 8), "qzeros": (groups, out // 8), "scales": (groups, out)}
    return {"qweight": (in_features // 8, out), "qzeros": (groups, out // 8), "scales": (groups, out),
            "g_idx": (in_features,)}


def repack(fmt: Int4Format, name: str, tensors: dict[str, torch.Tensor],
           dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One projection's checkpoint tensors -> (qweight, scales, zeros) in Int4GroupLinear's layout."""
    order = AWQ_ORDER if fmt.method == "awq" else GPTQ_ORDER
    zeros = (unpack_along_output(tensors["qzeros"], order) + fmt.zero_offset).to(dtype)
    scales = tensors["scales"].to(dtype)
    if fmt.method == "awq":
        return pack_along_input(unpack_along_output(tensors["qweight"], order)), scales, zeros
    in_features = tensors["g_idx"].numel()
    trivial = torch.arange(in_features, device=tensors["g_idx"].device) // fmt.group_size
    if not torch.equal(tensors["g_idx"].to(trivial.dtype), trivial):
        raise ValueError(f"{name}.g_idx reorders the inputs (quantization_config.desc_act true); int4 loads "
                         "GPTQ checkpoints made with desc_act false (or a g_idx of i // group_size)")
    return tensors["qweight"].to(torch.int32), scales, zeros


def unpack_along_output(words: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """words int32 [rows, out / 8] -> int32 [rows, out], value p of word c being column 8c + order[p]."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=words.device)
    values = (words.to(torch.int32)[..., None] >> shifts) & 0xF  # [rows, out / 8, 8], by position in the word
    by_column = torch.tensor(order).argsort().to(words.device)  # the position that holds each column
    return values[..., by_column].reshape(words.shape[0], -1)


@dataclass(frozen=True)
class Part:
    """One checkpoint projection: a block of columns of one of our (maybe merged) projections."""

    module: str  # our module's name
    columns: slice  # its columns in the module's outputs
    in_features: int


class Int4Checkpoint:
    """Turns a meta model's projections into Int4GroupLinear and fills them from a GPTQ/AWQ
    checkpoint's tensors, which may arrive in any order across shards: a projection is
    repacked once all of its tensors have arrived."""

    def __init__(self, model: nn.Module, fmt: Int4Format, dtype: torch.dtype,
                 stacked: dict[str, tuple[str, ...]]) -> None:
        self.model, self.fmt, self.dtype = model, fmt, dtype
        self.parts: dict[str, Part] = {}  # checkpoint projection name -> where it goes
        for name, module in list(model.named_modules()):
            if isinstance(module, nn.Linear) and name != "lm_head" and not any(k in name for k in fmt.keep_float):
                self._swap(name, module, stacked)
        self._pending: dict[str, dict[str, torch.Tensor]] = {}

    def _swap(self, name: str, linear: nn.Linear, stacked: dict[str, tuple[str, ...]]) -> None:
        in_features, out = linear.in_features, linear.out_features
        sizes = getattr(linear, "output_sizes", None)
        parent, _, leaf = name.rpartition(".")
        hf_names = [f"{parent}.{hf}" for hf in stacked[leaf]] if sizes and leaf in stacked else [name]
        start = 0
        for hf_name, size in zip(hf_names, sizes if len(hf_names) > 1 else (out,), strict=True):
            self.parts[hf_name] = Part(name, slice(start, start + size), in_features)
            start += size
        groups = in_features // self.fmt.group_size
        meta = dict(device="meta", dtype=self.dtype)
        module = Int4GroupLinear(torch.empty(in_features // 8, out, device="meta", dtype=torch.int32),
                                 torch.empty(groups, out, **meta), torch.empty(groups, out, **meta),
                                 linear.bias, sizes)
        setattr(self.model.get_submodule(parent), leaf, module)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every packed tensor the checkpoint must hold, by full name."""
        return {f"{hf_name}.{suffix}": shape
                for hf_name, part in self.parts.items()
                for suffix, shape in checkpoint_shapes(self.fmt, part.in_features, part.columns.stop
                                                       - part.columns.start).items()}

    def optional_shapes(self) -> dict[str, tuple[int, ...]]:
        """Tensors a checkpoint may hold or not: the all-zero `bias` that GPTQ exporters save for
        projections of architectures without one."""
        return {f"{hf_name}.bias": (part.columns.stop - part.columns.start,)
                for hf_name, part in self.parts.items() if self.model.get_submodule(part.module).bias is None}

    def add(self, key: str, tensor: torch.Tensor) -> None:
        """Take one packed tensor; repack and place its projection once it is complete."""
        hf_name, _, suffix = key.rpartition(".")
        if suffix == "bias":  # one of optional_shapes
            if tensor.count_nonzero():
                raise ValueError(f"{key} is not zero, but {type(self.model).__name__} has no bias there")
            return
        tensors = self._pending.setdefault(hf_name, {})
        tensors[suffix] = tensor
        part = self.parts[hf_name]
        if len(tensors) < len(checkpoint_shapes(self.fmt, part.in_features, 8)):
            return
        del self._pending[hf_name]
        module = self.model.get_submodule(part.module)
        for buffer, value in zip(("qweight", "scales", "zeros"),
                                 repack(self.fmt, hf_name, tensors, self.dtype), strict=True):
            current = getattr(module, buffer)
            if current.is_meta:
                current = torch.empty(current.shape, dtype=current.dtype, device=value.device)
                setattr(module, buffer, current)
            current[:, part.columns].copy_(value)
