"""Norm, rotary and MLP pieces against the transformers implementations they mirror."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from kvserve.models.layers import RMSNorm, RotaryEmbedding, apply_rotary, rope_parameters

LLAMA3 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def test_rope_parameters_from_both_config_formats():
    new = SimpleNamespace(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, **LLAMA3})
    old = SimpleNamespace(rope_theta=5e5, rope_scaling={"type": "llama3", **LLAMA3})
    assert rope_parameters(new) == rope_parameters(old)
    assert rope_parameters(SimpleNamespace(rope_theta=1e4, rope_scaling=None)) == {
        "rope_type": "default",
        "rope_theta": 1e4,
    }


def test_unsupported_rope_type_is_named():
    with pytest.raises(ValueError, match=r"unsupported rope scaling type 'yarn'.*llama3"):
        RotaryEmbedding(32, 16, {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0})


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "default", "rope_theta": 10000.0},
        {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
        {"rope_type": "llama3", "rope_theta": 500000.0, **LLAMA3},
    ],
)
def test_rotary_matches_transformers(rope):
    import transformers
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    config = transformers.LlamaConfig(
        hidden_size=128, num_attention_heads=2, max_position_embeddings=512, rope_parameters=rope
    )
    positions = torch.tensor([0, 1, 7, 63, 64, 100, 511])
    q, k = torch.randn(len(positions), 2, 64), torch.randn(len(positions), 1, 64)
    cos_ref, sin_ref = LlamaRotaryEmbedding(config)(q, positions[None])
    q_ref, k_ref = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos_ref, sin_ref)

    cos, sin = RotaryEmbedding(64, 512, rope_parameters(config))(positions)
    torch.testing.assert_close(apply_rotary(q, cos, sin), q_ref[0].transpose(0, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(apply_rotary(k, cos, sin), k_ref[0].transpose(0, 1), atol=1e-5, rtol=1e-5)


def test_rotary_keeps_dtype_and_table_survives_meta_construction():
    with torch.device("meta"):
        rotary = RotaryEmbedding(16, 8, {"rope_type": "default", "rope_theta": 1e4})
    assert rotary.cos_sin.device.type == "cpu" and rotary.cos_sin.dtype == torch.float32
    cos, sin = rotary(torch.tensor([0, 3]))
    assert torch.equal(cos[0], torch.ones(8)) and torch.equal(sin[0], torch.zeros(8))
    x = torch.randn(2, 1, 16, dtype=torch.bfloat16)
    assert apply_rotary(x, cos, sin).dtype == torch.bfloat16


def test_rmsnorm_matches_transformers_in_bfloat16():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    ours, reference = RMSNorm(64, eps=1e-5), LlamaRMSNorm(64, eps=1e-5)
    weight = torch.randn(64)
    ours.weight.data.copy_(weight)
    reference.weight.data.copy_(weight)
    x = torch.randn(5, 64).to(torch.bfloat16)
    ours, reference = ours.to(torch.bfloat16), reference.to(torch.bfloat16)
    assert torch.equal(ours(x), reference(x))
