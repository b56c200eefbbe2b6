"""Load a Hugging Face checkpoint directory into one of our architectures.

The model is built on the meta device (no memory, no random init) and each safetensors
tensor is read straight onto the target device, cast to the target dtype and put in
place of its parameter, so that peak memory is the weights plus one tensor. Checkpoint
tensors of projections that we merge (q/k/v, gate/up) fill blocks of rows of the merged
parameter instead: STACKED_PARAMETERS says which, and `checkpoint_layout` turns it into
the HF name -> slot map that the name check, the loading and `hf_state_dict` share.
A GPTQ or AWQ checkpoint (`quantization_config` in config.json) has its projections
swapped for int4 modules first, filled from the packed tensors by quantization_formats.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from kvserve.attention.backend import AttentionBackend
from kvserve.models import ARCHITECTURES
from kvserve.models.llama import head_dim_of
from kvserve.models.quantization_formats import Int4Checkpoint, int4_format

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INDEX_FILE = "model.safetensors.index.json"
# Checkpoint keys that hold no parameter of ours: old Llama exports saved the rotary
# frequencies, which we recompute.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# Our merged projection -> the HF projections whose rows it stacks, in row order (the
# block sizes come from the module's `output_sizes`).
STACKED_PARAMETERS: dict[str, tuple[str, ...]] = {
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "gate_up_proj": ("gate_proj", "up_proj"),
}


class ModelLoadError(ValueError):
    """The checkpoint cannot be loaded; the message says what is wrong and where."""


@dataclass(frozen=True)
class WeightSlot:
    """Where one checkpoint tensor goes in the model."""

    param: str  # our parameter's name
    rows: slice | None  # the block of its rows that the tensor fills; None: the whole parameter
    shape: tuple[int, ...]  # the checkpoint tensor's expected shape


@dataclass(frozen=True)
class ModelInfo:
    """What the engine needs to know about a model to size and stop its work."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int  # longest context the model supports here
    eos_token_ids: tuple[int, ...]  # any of these ends a sequence


def load_hf_config(model_dir: str | Path) -> Any:
    """The checkpoint's transformers config, after checking that we support its architecture."""
    model_dir = _check_dir(model_dir)
    raw = json.loads((model_dir / "config.json").read_text())
    architecture_of(raw, model_dir)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir, local_files_only=True)


def architecture_of(config: Any, model_dir: Path | str = "") -> str:
    """The first of the config's `architectures` that we implement."""
    names = config.get("architectures") if isinstance(config, dict) else getattr(config, "architectures", None)
    for name in names or []:
        if name in ARCHITECTURES:
            return name
    raise ModelLoadError(
        f"unsupported architecture {names} in {model_dir}/config.json; "
        f"supported: {', '.join(sorted(ARCHITECTURES))}"
    )


def resolve_dtype(config_dtype_str: str, hf_config: Any, device: str | torch.device) -> torch.dtype:
    """The dtype to run in: an explicit name, or for "auto" the checkpoint's dtype on a GPU.
    On the CPU, a 16-bit checkpoint runs in bfloat16 where the CPU has bf16 instructions
    and in float32 elsewhere (there, CPU kernels for half types are slow); a float32
    checkpoint stays float32."""
    if config_dtype_str != "auto":
        if config_dtype_str not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {sorted(DTYPES)}, got {config_dtype_str!r}")
        return DTYPES[config_dtype_str]
    stored = _stored_dtype(hf_config)
    if torch.device(device).type == "cpu":
        return torch.bfloat16 if stored != torch.float32 and cpu_has_fast_bf16() else torch.float32
    return stored


def _stored_dtype(hf_config: Any) -> torch.dtype:
    stored = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
    if isinstance(stored, torch.dtype):
        return stored
    return DTYPES.get(str(stored).removeprefix("torch."), torch.bfloat16)


FAST_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bf16 matrix math


def cpu_has_fast_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:  # not Linux: play safe
        return False
    return any(flag in flags for flag in FAST_BF16_FLAGS)


def load_model(
    model_dir: str | Path, attn_backend: AttentionBackend, dtype: torch.dtype, device: str | torch.device
) -> nn.Module:
    """Build the checkpoint's architecture and fill it with its weights on `device`."""
    model_dir = _check_dir(model_dir)
    hf_config = load_hf_config(model_dir)
    arch = ARCHITECTURES[architecture_of(hf_config, model_dir)]
    files = safetensors_files(model_dir)
    with torch.device("meta"):
        model = arch(hf_config, attn_backend)
    packed = int4_checkpoint(model, hf_config, dtype, model_dir)
    layout = checkpoint_layout(model)
    expected = {name: slot.shape for name, slot in layout.items()} | (packed.expected_shapes() if packed else {})
    _check_names_and_shapes(model, expected, files, packed.optional_shapes() if packed else {})
    with _progress(len(expected), f"loading weights ({dtype_name(dtype)})") as bar:
        for file in files:
            with safe_open(file, framework="pt", device=str(device)) as f:
                for key in _wanted_keys(model, f.keys()):
                    if key in layout:
                        _fill_slot(model, layout[key], f.get_tensor(key).to(dtype))
                    else:  # a packed int4 tensor, kept as stored until its projection is complete
                        _add_packed(packed, key, f.get_tensor(key), model_dir)
                    bar.update(1)
    # Buffers (the rotary table) were built on the CPU and follow the weights here.
    return model.to(device).eval()


def int4_checkpoint(model: nn.Module, hf_config: Any, dtype: torch.dtype, model_dir: Path) -> Int4Checkpoint | None:
    """For a GPTQ/AWQ checkpoint, the (meta) model's projections become int4 modules that the
    returned loader fills; None for a float checkpoint."""
    try:
        fmt = int4_format(hf_config)
    except ValueError as exc:
        raise ModelLoadError(f"{model_dir}/config.json: {exc}") from None
    return Int4Checkpoint(model, fmt, dtype, STACKED_PARAMETERS) if fmt else None


def _add_packed(packed: Int4Checkpoint, key: str, tensor: torch.Tensor, model_dir: Path) -> None:
    try:
        packed.add(key, tensor)
    except ValueError as exc:
        raise ModelLoadError(f"{model_dir}: {exc}") from None


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tensor", mininterval=0.5)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def checkpoint_layout(model: nn.Module) -> dict[str, WeightSlot]:
    """Every weight a Hugging Face checkpoint of `model` holds, by HF name, with its slot.

    A parameter of a merged projection (one whose name is in STACKED_PARAMETERS and whose
    module has `output_sizes`) appears as one entry per stacked HF projection.
    """
    layout: dict[str, WeightSlot] = {}
    for name, param in model.named_parameters():
        module_path, _, leaf = name.rpartition(".")
        parent, _, module_name = module_path.rpartition(".")
        sizes = getattr(model.get_submodule(module_path), "output_sizes", None)
        if module_name not in STACKED_PARAMETERS or sizes is None:
            layout[name] = WeightSlot(name, None, tuple(param.shape))
            continue
        start = 0
        for hf_module, size in zip(STACKED_PARAMETERS[module_name], sizes, strict=True):
            hf_name = f"{parent}.{hf_module}.{leaf}" if parent else f"{hf_module}.{leaf}"
            layout[hf_name] = WeightSlot(name, slice(start, start + size), (size, *param.shape[1:]))
            start += size
    return layout


def hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under Hugging Face names, as views (merged projections sliced
    by rows, nothing copied): what a transformers model of the same config loads."""
    weights = {}
    for hf_name, slot in checkpoint_layout(model).items():
        param = model.get_parameter(slot.param).detach()
        weights[hf_name] = param if slot.rows is None else param[slot.rows]
    return weights


def safetensors_files(model_dir: Path) -> list[Path]:
    """The weight files: those of the shard index, else model.safetensors, else every
    *.safetensors (leaving out Mistral's consolidated.safetensors duplicate)."""
    index = model_dir / INDEX_FILE
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [name for name in shards if not (model_dir / name).exists()]
        if missing:
            raise ModelLoadError(f"{index} lists shards that are not there: {', '.join(missing[:3])}")
        return [model_dir / name for name in shards]
    if (model_dir / "model.safetensors").exists():
        return [model_dir / "model.safetensors"]
    files = sorted(p for p in model_dir.glob("*.safetensors") if not p.name.startswith("consolidated"))
    if not files:
        raise ModelLoadError(
            f"no *.safetensors weight files in {model_dir} (only safetensors checkpoints are supported)"
        )
    return files


def model_info(hf_config: Any, model_dir: str | Path | None = None) -> ModelInfo:
    """Sizes and stop tokens; eos ids come from config.json and generation_config.json
    (found in `model_dir`, by default the directory the config was loaded from)."""
    model_dir = Path(model_dir or getattr(hf_config, "name_or_path", "") or ".")
    eos = _as_ids(getattr(hf_config, "eos_token_id", None))
    generation_file = model_dir / "generation_config.json"
    if generation_file.exists():
        eos += _as_ids(json.loads(generation_file.read_text()).get("eos_token_id"))
    max_positions = hf_config.max_position_embeddings
    # Our attention backends attend to the whole context: a sliding-window model (Mistral
    # v0.1) is only exact up to its window, so the window bounds the context.
    window = getattr(hf_config, "sliding_window", None)
    if window:
        max_positions = min(max_positions, window)
    return ModelInfo(
        num_layers=hf_config.num_hidden_layers,
        num_kv_heads=getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads,
        head_dim=head_dim_of(hf_config),
        vocab_size=hf_config.vocab_size,
        max_position_embeddings=max_positions,
        eos_token_ids=tuple(dict.fromkeys(eos)),
    )


def _check_dir(model_dir: str | Path) -> Path:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist or is not a directory")
    if not (model_dir / "config.json").exists():
        raise ModelLoadError(f"no config.json in {model_dir}: not a Hugging Face model directory")
    return model_dir


def _as_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(value)] if isinstance(value, int) else [int(v) for v in value]


def _wanted_keys(model: nn.Module, keys) -> list[str]:
    skip_lm_head = getattr(model, "tie_word_embeddings", False)
    return [
        key
        for key in keys
        if not key.endswith(IGNORED_SUFFIXES) and not (skip_lm_head and key == "lm_head.weight")
    ]


def _check_names_and_shapes(model: nn.Module, expected: dict[str, tuple[int, ...]], files: list[Path],
                            optional: dict[str, tuple[int, ...]]) -> None:
    """Compare the checkpoint's names and shapes with the model's before reading any data
    (names in `optional` may be absent)."""
    found: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            for key in _wanted_keys(model, f.keys()):
                found[key] = tuple(f.get_slice(key).get_shape())
    expected = expected | {name: shape for name, shape in optional.items() if name in found}
    unexpected = sorted(set(found) - set(expected))
    missing = sorted(set(expected) - set(found))
    if missing or unexpected:
        raise ModelLoadError(
            f"checkpoint weights do not match {type(model).__name__}: "
            f"{len(missing)} missing {_few(missing)}, {len(unexpected)} unexpected {_few(unexpected)}"
        )
    wrong = [f"{k}: checkpoint {found[k]} vs model {expected[k]}" for k in sorted(found) if found[k] != expected[k]]
    if wrong:
        raise ModelLoadError(f"{len(wrong)} weights have the wrong shape, e.g. {'; '.join(wrong[:3])}")


def _few(names: list[str], count: int = 4) -> str:
    if not names:
        return ""
    more = f", ... (+{len(names) - count})" if len(names) > count else ""
    return "(" + ", ".join(names[:count]) + more + ")"


def _fill_slot(model: nn.Module, slot: WeightSlot, tensor: torch.Tensor) -> None:
    """Put a checkpoint tensor in place: as the parameter itself, or copied into its rows of
    a merged parameter (allocated, uninitialised, by the first of its blocks to arrive; the
    name check has made sure that every block arrives)."""
    if slot.rows is None:
        _set_parameter(model, slot.param, tensor)
        return
    param = model.get_parameter(slot.param)
    if param.is_meta:
        param = _set_parameter(model, slot.param, tensor.new_empty(param.shape))
    param.data[slot.rows].copy_(tensor)


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> nn.Parameter:
    module_name, _, leaf = name.rpartition(".")
    param = nn.Parameter(tensor, requires_grad=False)
    setattr(model.get_submodule(module_name), leaf, param)
    return param
