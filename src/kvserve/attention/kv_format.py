"""How K and V are stored in the paged cache: the model's dtype, or FP8 (E4M3) with scales.

An FP8 cache holds `value / scale` as float8_e4m3fn, clamped to E4M3's finite range
(±448: a cast past it would give NaN on some paths), one scale for a layer's keys and
one for its values. Attention reads it back as `stored * scale`: the kernels convert the tile to
the query's dtype in registers (exact: E4M3 fits in bfloat16) and fold the scales into
arithmetic they already do (the key scale into the softmax scale, the value scale into
the final normalisation), so dequantizing costs no extra pass over the tile.

Each attention layer's backend carries its own scales (KVScales, 1.0 when not given);
the engine measures them per layer at start-up (kvserve.worker.kv_calibration says why),
before any block is stored, and never changes them: every stored block stays readable by
later requests (prefix caching).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FP8_MAX = 448.0  # largest finite float8_e4m3fn
# --kv-cache-dtype name -> storage dtype; "auto" is the model's own dtype
STORAGE_DTYPES: dict[str, torch.dtype] = {"fp8": torch.float8_e4m3fn, "fp8_e4m3": torch.float8_e4m3fn}
FP8_MIN_CAPABILITY = (8, 9)  # Ada and Hopper convert E4M3 in hardware; Triton refuses it before


@dataclass(frozen=True)
class KVScales:
    """stored = value / scale (FP8 caches only; a cache in the model's dtype ignores them)."""

    k: float = 1.0
    v: float = 1.0


def kv_cache_dtype(name: str, model_dtype: torch.dtype) -> torch.dtype:
    """The storage dtype of a --kv-cache-dtype name."""
    return STORAGE_DTYPES.get(name, model_dtype)


def is_fp8(cache: torch.Tensor) -> bool:
    return cache.dtype == torch.float8_e4m3fn


def quantize_fp8(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x / scale as float8_e4m3fn, rounded to nearest, saturated at ±448 (the torch path's
    version of what the store_kv kernel does in registers)."""
    return (x.float() * (1.0 / scale)).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)


def fp8_unsupported_reason(device: torch.device, backend: str) -> str | None:
    """Why an FP8 KV cache cannot run here, or None. The torch backend converts anywhere;
    the Triton kernels need a GPU that converts E4M3 (compute capability 8.9+)."""
    if device.type != "cuda" or backend != "triton":
        return None
    capability = torch.cuda.get_device_capability(device)
    if capability >= FP8_MIN_CAPABILITY:
        return None
    return (f"kv_cache_dtype=fp8 needs a GPU of compute capability {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} "
            f"or newer (Ada, Hopper) for the Triton attention kernels; {torch.cuda.get_device_name(device)} is "
            f"{capability[0]}.{capability[1]}. Use --kv-cache-dtype auto, or --attention-backend torch (slow)")
