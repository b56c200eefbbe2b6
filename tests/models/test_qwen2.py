"""Qwen2: the q/k/v projections carry a bias, o_proj does not."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from kvserve.attention.torch_backend import TorchAttentionBackend
from kvserve.models import ARCHITECTURES, Qwen2ForCausalLM
from kvserve.models.loader import hf_state_dict, load_model


def test_qkv_biases_are_loaded(tiny_qwen2):
    assert ARCHITECTURES["Qwen2ForCausalLM"] is Qwen2ForCausalLM
    model = load_model(tiny_qwen2, TorchAttentionBackend(), torch.float32, "cpu")
    stored = load_file(tiny_qwen2 / "model.safetensors")
    ours = hf_state_dict(model)
    for proj in ("q_proj", "k_proj", "v_proj"):
        name = f"model.layers.1.self_attn.{proj}.bias"
        assert torch.equal(ours[name], stored[name])
    assert model.model.layers[1].self_attn.o_proj.bias is None
