"""Llama-family decoder (Llama 2/3/3.x, SmolLM2, Mistral-style) for paged attention.

Tokens of all sequences in a step are packed into one flat batch [T]; the attention
backend finds each sequence's context through the block tables in AttentionMetadata.
Module and parameter names match Hugging Face, so checkpoints load 1:1 by name.
Qwen2 and Qwen3 are subclasses that change `attention_options` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kvserve.attention.backend import AttentionBackend, AttentionMetadata
from kvserve.models.layers import GatedMLP, RMSNorm, RotaryEmbedding, apply_rotary, rope_parameters


@dataclass(frozen=True)
class AttentionOptions:
    """Per-architecture differences of the attention block."""

    qkv_bias: bool = False  # bias on q_proj, k_proj, v_proj
    o_bias: bool = False  # bias on o_proj
    qk_norm: bool = False  # RMSNorm over each head of q and k before rotary (Qwen3)


def head_dim_of(hf_config: Any) -> int:
    # Some checkpoints (Qwen3, Mistral Nemo) set head_dim apart from hidden_size / heads.
    return getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads


class LlamaAttention(nn.Module):
    """Grouped-query self-attention; the KV cache read/write is the backend's job."""

    def __init__(self, hf_config: Any, layer_idx: int, backend: AttentionBackend, options: AttentionOptions):
        super().__init__()
        hidden = hf_config.hidden_size
        self.num_heads = hf_config.num_attention_heads
        self.num_kv_heads = getattr(hf_config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = head_dim_of(hf_config)
        self.scale = self.head_dim**-0.5
        self.layer_idx = layer_idx
        self.backend = backend
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=options.qkv_bias)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=options.qkv_bias)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=options.qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=options.o_bias)
        if options.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, hf_config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, hf_config.rms_norm_eps)
        self.qk_norm = options.qk_norm

    def forward(
        self,
        x: torch.Tensor,  # [T, hidden]
        cos: torch.Tensor,  # [T, head_dim // 2]
        sin: torch.Tensor,
        kv_caches: list[torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        tokens = x.shape[0]
        q = self.q_proj(x).view(tokens, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(tokens, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(tokens, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = self.backend.forward(q, k, v, kv_caches[self.layer_idx], meta, self.scale)  # [T, H, D]
        return self.o_proj(out.reshape(tokens, self.num_heads * self.head_dim))


class LlamaDecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then h + mlp(norm(h))."""

    def __init__(self, hf_config: Any, layer_idx: int, backend: AttentionBackend, options: AttentionOptions):
        super().__init__()
        eps = hf_config.rms_norm_eps
        self.input_layernorm = RMSNorm(hf_config.hidden_size, eps)
        self.self_attn = LlamaAttention(hf_config, layer_idx, backend, options)
        self.post_attention_layernorm = RMSNorm(hf_config.hidden_size, eps)
        self.mlp = GatedMLP(
            hf_config.hidden_size, hf_config.intermediate_size, bias=getattr(hf_config, "mlp_bias", False)
        )

    def forward(self, x, cos, sin, kv_caches, meta):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, kv_caches, meta)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """Embedding, decoder layers and final norm (HF's `model.` prefix)."""

    def __init__(self, hf_config: Any, backend: AttentionBackend, options: AttentionOptions):
        super().__init__()
        self.embed_tokens = nn.Embedding(hf_config.vocab_size, hf_config.hidden_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(hf_config, i, backend, options) for i in range(hf_config.num_hidden_layers)
        )
        self.norm = RMSNorm(hf_config.hidden_size, hf_config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(
            head_dim_of(hf_config), hf_config.max_position_embeddings, rope_parameters(hf_config)
        )

    def forward(self, input_ids, positions, kv_caches, meta) -> torch.Tensor:
        cos, sin = self.rotary_emb(positions)  # computed once, shared by every layer
        x = self.embed_tokens(input_ids)  # [T, hidden]
        for layer in self.layers:
            x = layer(x, cos, sin, kv_caches, meta)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    """A Llama-style causal LM over packed tokens and a paged KV cache.

    `forward` returns the final hidden states of every token; the model runner picks the
    rows it needs (usually each sequence's last token) and calls `compute_logits` on them.
    With tied embeddings there is no `lm_head` module: the embedding matrix is reused.
    """

    def __init__(self, hf_config: Any, attn_backend: AttentionBackend):
        super().__init__()
        self.config = hf_config
        self.model = LlamaModel(hf_config, attn_backend, self.attention_options(hf_config))
        self.tie_word_embeddings = bool(getattr(hf_config, "tie_word_embeddings", False))
        if not self.tie_word_embeddings:
            self.lm_head = nn.Linear(hf_config.hidden_size, hf_config.vocab_size, bias=False)

    @classmethod
    def attention_options(cls, hf_config: Any) -> AttentionOptions:
        bias = bool(getattr(hf_config, "attention_bias", False))
        return AttentionOptions(qkv_bias=bias, o_bias=bias)

    def forward(
        self,
        input_ids: torch.Tensor,  # [T] int64
        positions: torch.Tensor,  # [T] int64
        kv_caches: list[torch.Tensor],  # one [2, num_blocks, block_size, num_kv_heads, head_dim] per layer
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # [T, hidden]
        return self.model(input_ids, positions, kv_caches, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [N, vocab] in float32 for hidden states [N, hidden]."""
        weight = self.model.embed_tokens.weight if self.tie_word_embeddings else self.lm_head.weight
        return F.linear(hidden, weight).float()
