"""Qwen3: per-head q/k norms and tied embeddings."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from kvserve.attention.torch_backend import TorchAttentionBackend
from kvserve.models import ARCHITECTURES, Qwen3ForCausalLM
from kvserve.models.loader import load_model


def test_qk_norms_and_tied_embeddings(tiny_qwen3):
    assert ARCHITECTURES["Qwen3ForCausalLM"] is Qwen3ForCausalLM
    model = load_model(tiny_qwen3, TorchAttentionBackend(), torch.float32, "cpu")
    stored = load_file(tiny_qwen3 / "model.safetensors")
    attn = model.model.layers[0].self_attn
    assert attn.q_norm.weight.shape == (32,)  # head_dim, not hidden_size / heads
    assert torch.equal(attn.k_norm.weight, stored["model.layers.0.self_attn.k_norm.weight"])

    hidden = torch.randn(3, 64)
    expected = hidden @ stored["model.embed_tokens.weight"].T
    torch.testing.assert_close(model.compute_logits(hidden), expected)
