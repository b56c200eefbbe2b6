"""How many KV blocks fit: a memory budget turned into a block count, and the allocation."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn

from kvserve.config import ConfigError, EngineConfig

GIB = 1 << 30


def bytes_per_block(block_size: int, info, dtype: torch.dtype) -> int:
    """K and V, every layer, one block, stored as `dtype` (the KV cache's: 1 byte for FP8)."""
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * info.num_layers * block_size * info.num_kv_heads * info.head_dim * elem


def allocate_kv_caches(num_blocks: int, block_size: int, info, dtype: torch.dtype, device) -> list[torch.Tensor]:
    # one tensor per layer: [2, num_blocks, block_size, num_kv_heads, head_dim]
    shape = (2, num_blocks, block_size, info.num_kv_heads, info.head_dim)
    return [torch.zeros(shape, dtype=dtype, device=device) for _ in range(info.num_layers)]


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers (on the meta device: what they will take)."""
    return sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))


def check_gpu_memory(config: EngineConfig, device: torch.device, weight_bytes: int) -> None:
    """Before any weight is loaded: refuse, with the numbers, a model that its share of the
    GPU cannot hold, or a share that the device has not got free (other processes, or other
    engines of this one, hold the rest). `gpu_memory_utilization` is this engine's share."""
    util = config.cache.gpu_memory_utilization
    free, total = torch.cuda.mem_get_info(device)
    available = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    share = int(total * util)
    if weight_bytes >= share:
        raise ConfigError(
            f"the model's weights need {weight_bytes / GIB:.2f} GiB, more than this engine's share of the GPU: "
            f"gpu_memory_utilization={util} of {total / GIB:.1f} GiB is {share / GIB:.2f} GiB. "
            f"Raise --gpu-memory-utilization (the weights alone need {weight_bytes / total:.2f}, plus room for "
            "the KV cache), load a smaller dtype, or use a GPU with more memory"
        )
    if share > available:
        raise ConfigError(
            f"gpu_memory_utilization={util} asks for {share / GIB:.2f} GiB of the GPU's {total / GIB:.1f} GiB, "
            f"but only {available / GIB:.2f} GiB are free (other processes or engines hold the rest). "
            f"Lower --gpu-memory-utilization to at most {int(available / total * 100) / 100:.2f}, "
            "or free the GPU"
        )


def num_kv_blocks(config: EngineConfig, info, dtype: torch.dtype, device: torch.device,
                  profile_run: Callable[[int], None], weight_bytes: int, extra_bytes_per_block: int = 0) -> int:
    """`extra_bytes_per_block`: another pool of the same block count shares the budget (a draft model's)."""
    cache = config.cache
    per_block = bytes_per_block(cache.block_size, info, dtype) + extra_bytes_per_block
    if cache.num_gpu_blocks_override:
        return cache.num_gpu_blocks_override
    if device.type == "cuda":
        budget = _gpu_budget(config, profile_run, device, weight_bytes)
        where = f"gpu_memory_utilization={cache.gpu_memory_utilization}"
    else:
        budget = int(cache.kv_cache_gib * GIB)
        where = f"kv_cache_gib={cache.kv_cache_gib}"
    num_blocks = budget // per_block
    if num_blocks < 1:
        raise ConfigError(
            f"no memory left for the KV cache ({budget / GIB:.2f} GiB with {where}); "
            "raise --gpu-memory-utilization (GPU) or --kv-cache-gib (CPU), or use a smaller model"
        )
    return num_blocks


def check_fits(num_blocks: int, block_size: int, max_model_len: int) -> None:
    """Fail at start-up, not at the first long request, if one full context can't fit."""
    capacity = num_blocks * block_size
    if capacity < max_model_len:
        raise ConfigError(
            f"the KV cache holds {capacity} tokens ({num_blocks} blocks of {block_size}), "
            f"less than max_model_len={max_model_len}: lower --max-model-len to at most {capacity}, "
            "or give the cache more memory (--gpu-memory-utilization on GPU, --kv-cache-gib on CPU)"
        )


def _gpu_budget(config: EngineConfig, profile_run: Callable[[int], None], device: torch.device,
                weight_bytes: int) -> int:
    """Bytes for the KV cache: this engine's share (utilization × total) minus its weights
    and the measured activation peak of a full-budget step. Memory that other engines of
    this process hold is theirs: it counts against neither share (check_gpu_memory has
    made sure that this share is free)."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    total = torch.cuda.mem_get_info(device)[1]
    profile_run(config.scheduler.max_num_batched_tokens)
    torch.cuda.synchronize(device)
    activation_peak = torch.cuda.max_memory_allocated(device) - before
    torch.cuda.empty_cache()
    return int(total * config.cache.gpu_memory_utilization) - weight_bytes - activation_peak
