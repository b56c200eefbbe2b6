"""Fused rotary kernel against its torch reference, and the reference against HF's."""

from __future__ import annotations

import pytest
import torch

from tests.ops import triton_interpret

DEVICE = triton_interpret.setup()

from kvserve.ops.rotary import build_cos_sin_cache, rotary_torch_, rotary_triton_  # noqa: E402


def inv_freq(rotary_dim, base=10000.0):
    return 1.0 / base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_dim,rotary_dim", [(32, 32), (48, 24)])  # full, partial with masked half
def test_kernel_matches_reference_on_strided_qkv_views(dtype, head_dim, rotary_dim):
    g = torch.Generator().manual_seed(0)
    tokens, heads, kv_heads = 7, 4, 2
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, generator=g).to(dtype).to(DEVICE)
    positions = torch.randint(0, 200, (tokens,), generator=g).to(DEVICE)
    cache = build_cos_sin_cache(inv_freq(rotary_dim), 256).to(DEVICE)
    expected = qkv.clone()

    def views(t):  # q, k: strided views of the fused projection, as the model passes them
        return t[:, :heads * head_dim].view(tokens, heads, head_dim), \
            t[:, heads * head_dim:(heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)

    rotary_torch_(*views(expected), positions, cache)
    rotary_triton_(*views(qkv), positions, cache)
    assert not qkv.isnan().any()
    atol = 1e-6 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(qkv, expected, rtol=0, atol=atol)
    assert torch.equal(qkv[:, -kv_heads * head_dim:], expected[:, -kv_heads * head_dim:])  # v untouched


def test_reference_matches_hugging_face_rotate_half():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    q, k = torch.randn(5, 4, 64), torch.randn(5, 2, 64)
    positions = torch.tensor([0, 3, 17, 100, 511])
    cache = build_cos_sin_cache(inv_freq(64), 512)
    freqs = positions[:, None].float() * inv_freq(64)[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    hf_q, hf_k = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], emb.cos()[None],
                                      emb.sin()[None])
    rotary_torch_(q, k, positions, cache)
    torch.testing.assert_close(q, hf_q[0].transpose(0, 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k, hf_k[0].transpose(0, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_adjacent_q_and_k_rotate_as_one_view_with_the_same_bits(dtype):
    # the fused qkv output lets one set of ops rotate q and k together; copies of q and k
    # (Qwen3's normed heads) go one at a time: both must give the same bits
    tokens, heads, kv_heads, head_dim = 3, 4, 2, 32
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim).to(dtype)
    positions, cache = torch.tensor([0, 5, 300]), build_cos_sin_cache(inv_freq(head_dim), 512)
    q = qkv[:, :heads * head_dim].view(tokens, heads, head_dim)
    k = qkv[:, heads * head_dim:(heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    q_before = q.clone()
    q_copy, k_copy, v_before = q.clone(), k.clone(), qkv[:, (heads + kv_heads) * head_dim:].clone()
    rotary_torch_(q, k, positions, cache)
    rotary_torch_(q_copy, k_copy, positions, cache)
    assert torch.equal(q, q_copy) and torch.equal(k, k_copy)
    assert not torch.equal(q[1:], q_before[1:])  # rotated (position 0 is the identity)
    assert torch.equal(qkv[:, (heads + kv_heads) * head_dim:], v_before)
