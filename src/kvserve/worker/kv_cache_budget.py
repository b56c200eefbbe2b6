"""How many KV blocks fit: a memory budget turned into a block count, and the allocation."""

from __future__ import annotations

from collections.abc import Callable

import torch

from kvserve.config import ConfigError, EngineConfig

GIB = 1 << 30


def bytes_per_block(block_size: int, info, dtype: torch.dtype) -> int:
    """K and V, every layer, one block."""
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * info.num_layers * block_size * info.num_kv_heads * info.head_dim * elem


def allocate_kv_caches(num_blocks: int, block_size: int, info, dtype: torch.dtype, device) -> list[torch.Tensor]:
    # one tensor per layer: [2, num_blocks, block_size, num_kv_heads, head_dim]
    shape = (2, num_blocks, block_size, info.num_kv_heads, info.head_dim)
    return [torch.zeros(shape, dtype=dtype, device=device) for _ in range(info.num_layers)]


def num_kv_blocks(config: EngineConfig, info, dtype: torch.dtype, device: torch.device,
                  profile_run: Callable[[int], None]) -> int:
    cache = config.cache
    per_block = bytes_per_block(cache.block_size, info, dtype)
    if cache.num_gpu_blocks_override:
        return cache.num_gpu_blocks_override
    if device.type == "cuda":
        budget = _gpu_budget(config, profile_run, device)
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


def _gpu_budget(config: EngineConfig, profile_run: Callable[[int], None], device: torch.device) -> int:
    """Bytes for the KV cache: utilization × total, minus weights, the measured activation
    peak of a full-budget step, and what other processes hold."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    free_before, total = torch.cuda.mem_get_info(device)
    others = total - free_before - torch.cuda.memory_reserved(device)
    profile_run(config.scheduler.max_num_batched_tokens)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    torch.cuda.empty_cache()
    return int(total * config.cache.gpu_memory_utilization) - peak - others
