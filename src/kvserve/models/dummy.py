"""Random weights of a checkpoint's shape (vLLM's load_format="dummy"): benchmarks and
GPU checks on an architecture without downloading it. Only config.json is read."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kvserve.attention.backend import AttentionBackend
from kvserve.models import ARCHITECTURES
from kvserve.models.loader import architecture_of, load_hf_config

INIT_STD = 0.02  # the usual initializer_range of these architectures


def load_dummy_model(
    model_dir: str | Path, attn_backend: AttentionBackend, dtype: torch.dtype, device: str | torch.device, seed: int = 0
) -> nn.Module:
    hf_config = load_hf_config(model_dir)
    arch = ARCHITECTURES[architecture_of(hf_config, model_dir)]
    with torch.device("meta"):
        model = arch(hf_config, attn_backend)
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, param in list(model.named_parameters()):
        data = torch.empty(param.shape, dtype=dtype, device=device)
        if name.endswith("norm.weight"):
            data.fill_(1.0)
        elif name.endswith(".bias"):
            data.zero_()
        else:
            data.normal_(0.0, INIT_STD, generator=gen)
        module_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(module_name), leaf, nn.Parameter(data, requires_grad=False))
    return model.to(device).eval()
