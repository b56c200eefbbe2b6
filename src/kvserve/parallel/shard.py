"""What a model needs to be split over N ranks, and the transform that splits a loaded one.

The transform follows Megatron's layout on a plain single-device model: q|k|v and
gate|up keep this rank's block of heads / intermediate rows (column-parallel, no
communication); o_proj and down_proj keep the matching input columns and sum over the
ranks (row-parallel); embedding and LM head keep a block of vocabulary rows. A model
with fewer KV heads than ranks keeps on each rank the one KV head its query heads read.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from kvserve.config import ConfigError, EngineConfig
from kvserve.models.layers import GatedMLP
from kvserve.models.llama import LlamaAttention
from kvserve.parallel.group import RankGroup
from kvserve.parallel.layers import RowParallelLinear, VocabParallelEmbedding, VocabParallelHead


def check_shardable(hf_config: Any, n: int) -> None:
    """ConfigError, before any weight is read, when the model's heads or MLP rows do not
    split evenly over `n` ranks; the message lists the sizes that would."""
    heads = hf_config.num_attention_heads
    kv_heads = getattr(hf_config, "num_key_value_heads", None) or heads
    sizes = {"attention heads": heads, "MLP rows (intermediate_size)": hf_config.intermediate_size}
    fits = f"use one of {_sizes_that_split(heads, kv_heads, hf_config.intermediate_size)}"
    for what, count in sizes.items():
        if count % n:
            raise ConfigError(f"tensor_parallel_size={n} does not divide the model's {count} {what}: {fits}")
    if kv_heads % n and n % kv_heads:
        raise ConfigError(f"tensor_parallel_size={n} neither divides the model's {kv_heads} KV heads nor is a "
                          f"multiple of them (a KV head is then copied to each rank that reads it): {fits}")


def _sizes_that_split(heads: int, kv_heads: int, intermediate: int) -> list[int]:
    return [d for d in range(1, heads + 1)
            if heads % d == 0 and intermediate % d == 0 and (kv_heads % d == 0 or d % kv_heads == 0)]


def check_supported(config: EngineConfig) -> None:
    """The features that do not split yet: their transforms expect a whole model."""
    n = config.device.tensor_parallel_size
    if config.model.quantization:
        raise ConfigError(f"quantization={config.model.quantization} does not run with tensor_parallel_size={n} "
                          "yet: use one or the other")
    if config.speculative is not None and config.speculative.method == "draft_model":
        raise ConfigError(f"a draft model does not run with tensor_parallel_size={n} yet "
                          '(the ngram method does: {"method": "ngram"})')


def check_devices(n: int, device_type: str) -> None:
    """One GPU per rank: refuse more ranks than GPUs, saying how many the model asked for."""
    if device_type != "cuda":
        return
    have = torch.cuda.device_count()
    if n > have:
        raise ConfigError(f"tensor_parallel_size={n} needs {n} GPUs, one per rank; this machine has {have}")


def local_info(info, hf_config: Any, n: int):
    """The ModelInfo of one rank's slice: its KV heads (the KV pool holds only those)."""
    kv_heads = getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads
    return replace(info, num_kv_heads=max(1, kv_heads // n))


def shard_model(model: nn.Module, group: RankGroup) -> nn.Module:
    """Cut a loaded model down to this rank's slice, in place; the full weights are freed."""
    if group.world_size == 1:
        return model
    for module in list(model.modules()):
        if isinstance(module, LlamaAttention):
            _shard_attention(module, group)
        elif isinstance(module, GatedMLP):
            _shard_mlp(module, group)
    _shard_vocabulary(model, group)
    return model


def _shard_attention(attn: LlamaAttention, group: RankGroup) -> None:
    n, r, d = group.world_size, group.rank, attn.head_dim
    heads, kv_heads = attn.num_heads // n, max(1, attn.num_kv_heads // n)
    kv_start = r * heads * attn.num_kv_heads // attn.num_heads  # the KV head of this rank's first query head
    q_rows = _span(r * heads * d, heads * d)
    k_rows = _span(attn.q_size + kv_start * d, kv_heads * d)
    v_rows = _span(attn.q_size + attn.kv_size + kv_start * d, kv_heads * d)
    rows = torch.cat([q_rows, k_rows, v_rows])
    _keep_rows(attn.qkv_proj, rows, (heads * d, kv_heads * d, kv_heads * d))
    attn.o_proj = _row_parallel(attn.o_proj, q_rows, group)
    attn.num_heads, attn.num_kv_heads = heads, kv_heads
    attn.q_size, attn.kv_size = heads * d, kv_heads * d


def _shard_mlp(mlp: GatedMLP, group: RankGroup) -> None:
    size = mlp.gate_up_proj.output_sizes[0] // group.world_size
    own = _span(group.rank * size, size)
    _keep_rows(mlp.gate_up_proj, torch.cat([own, own + mlp.gate_up_proj.output_sizes[0]]), (size, size))
    mlp.down_proj = _row_parallel(mlp.down_proj, own, group)


def _shard_vocabulary(model: nn.Module, group: RankGroup) -> None:
    embed = model.model.embed_tokens
    vocab = embed.weight.shape[0]
    rows = -(-vocab // group.world_size)
    start = group.rank * rows
    sliced = VocabParallelEmbedding(_padded_rows(embed.weight, start, rows), start, group)
    model.model.embed_tokens = sliced
    if model.tie_word_embeddings:
        head = _linear(sliced.weight)  # the same parameter: tied weights stay one tensor
    else:
        head = _linear(_padded_rows(model.lm_head.weight, start, rows))
    model.lm_head = VocabParallelHead(head, vocab, group)
    model.tie_word_embeddings = False  # compute_logits now goes through lm_head


def _span(start: int, size: int) -> torch.Tensor:
    return torch.arange(start, start + size)


def _keep_rows(linear: nn.Linear, rows: torch.Tensor, output_sizes: tuple[int, ...]) -> None:
    linear.weight = nn.Parameter(linear.weight.data[rows.to(linear.weight.device)].clone(), requires_grad=False)
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.data[rows.to(linear.bias.device)].clone(), requires_grad=False)
    linear.out_features = rows.numel()
    linear.output_sizes = output_sizes


def _row_parallel(linear: nn.Linear, columns: torch.Tensor, group: RankGroup) -> RowParallelLinear:
    weight = linear.weight.data[:, columns.to(linear.weight.device)].clone()
    return RowParallelLinear(_linear(weight), None if linear.bias is None else linear.bias.data, group)


def _padded_rows(weight: torch.Tensor, start: int, rows: int) -> torch.Tensor:
    """weight[start : start + rows], zero rows past its end (the vocabulary's padding)."""
    out = torch.zeros(rows, weight.shape[1], dtype=weight.dtype, device=weight.device)
    part = weight.data[start : start + rows]
    out[: part.shape[0]] = part
    return out


def _linear(weight: torch.Tensor) -> nn.Linear:
    with torch.device("meta"):
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight, requires_grad=False)
    return layer
