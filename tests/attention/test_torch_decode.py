"""The torch backend's single-token decode path against SDPA, the reference it replaces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kvserve.attention.torch_backend import decode_attention


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("heads,kv_heads", [(9, 3), (4, 4)])  # grouped query and plain multi-head
def test_decode_attention_matches_sdpa(dtype, atol, heads, kv_heads):
    g = torch.Generator().manual_seed(0)
    seq_len, head_dim = 37, 64
    q = torch.randn(1, heads, head_dim, generator=g).to(dtype)
    keys, values = (torch.randn(seq_len, kv_heads, head_dim, generator=g).to(dtype) for _ in range(2))
    out = decode_attention(q, keys, values, head_dim**-0.5)
    ref = F.scaled_dot_product_attention(q.float().transpose(0, 1), keys.float().transpose(0, 1),
                                         values.float().transpose(0, 1), scale=head_dim**-0.5,
                                         enable_gqa=heads != kv_heads).transpose(0, 1)
    assert out.shape == (1, heads, head_dim) and out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=atol, rtol=0)
