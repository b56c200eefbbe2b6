"""Llama-family decoder (Llama 2/3/3.x, SmolLM2, Mistral-style) for paged attention.

Tokens of all sequences in a step are packed into one flat batch [T]; the attention
backend finds each sequence's context through the block tables in AttentionMetadata.
Module names follow Hugging Face except for the merged projections (`qkv_proj`,
`gate_up_proj`), which the loader fills from the checkpoint's separate tensors.
Qwen2 and Qwen3 are subclasses that change `attention_options` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kvserve import ops
from kvserve.attention.backend import AttentionBackend, AttentionMetadata
from kvserve.models.layers import GatedMLP, MergedLinear, RMSNorm, RotaryEmbedding, rope_parameters


@dataclass(frozen=True)
class AttentionOptions:
    """Per-architecture differences of the attention block."""

    qkv_bias: bool = False  # bias on the q, k and v projections
    o_bias: bool = False  # bias on o_proj
    qk_norm: bool = False  # RMSNorm over each head of q and k before rotary (Qwen3)


def head_dim_of(hf_config: Any) -> int:
    # Some checkpoints (Qwen3, Mistral Nemo) set head_dim apart from hidden_size / heads.
    return getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads


class LlamaAttention(nn.Module):
    """Grouped-query self-attention; the KV cache read/write is the backend's job.

    q, k and v come from one merged projection; q and k are rotated in place inside its
    output, and the backend gets views of it (strided over tokens, contiguous per head).
    """

    def __init__(self, hf_config: Any, layer_idx: int, backend: AttentionBackend, options: AttentionOptions):
        super().__init__()
        hidden = hf_config.hidden_size
        self.num_heads = hf_config.num_attention_heads
        self.num_kv_heads = getattr(hf_config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = head_dim_of(hf_config)
        self.scale = self.head_dim**-0.5
        self.layer_idx = layer_idx
        self.backend = backend
        self.q_size, self.kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = MergedLinear(hidden, [self.q_size, self.kv_size, self.kv_size], bias=options.qkv_bias)
        self.o_proj = nn.Linear(self.q_size, hidden, bias=options.o_bias)
        if options.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, hf_config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, hf_config.rms_norm_eps)
        self.qk_norm = options.qk_norm

    def forward(
        self,
        x: torch.Tensor,  # [T, hidden]
        angles: ops.RotaryAngles,  # the step's rotary angles, shared by all layers
        kv_caches: list[torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        tokens = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(tokens, self.num_heads, self.head_dim)
        k = k.view(tokens, self.num_kv_heads, self.head_dim)
        v = v.view(tokens, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        ops.rotary_(q, k, angles)
        out = self.backend.forward(q, k, v, kv_caches[self.layer_idx], meta, self.scale)  # [T, H, D]
        return self.o_proj(out.reshape(tokens, self.q_size))


class LlamaDecoderLayer(nn.Module):
    """Pre-norm block over a residual stream: h = x + attn(norm(x)), then h + mlp(norm(h)).

    Each residual add is fused into the norm that follows it, so a layer takes and returns
    (output of its last sublayer, residual so far); the next norm adds them. The first
    layer gets no residual: its input is the embedding itself.
    """

    def __init__(self, hf_config: Any, layer_idx: int, backend: AttentionBackend, options: AttentionOptions):
        super().__init__()
        eps = hf_config.rms_norm_eps
        self.input_layernorm = RMSNorm(hf_config.hidden_size, eps)
        self.self_attn = LlamaAttention(hf_config, layer_idx, backend, options)
        self.post_attention_layernorm = RMSNorm(hf_config.hidden_size, eps)
        self.mlp = GatedMLP(
            hf_config.hidden_size, hf_config.intermediate_size, bias=getattr(hf_config, "mlp_bias", False)
        )

    def forward(
        self,
        x: torch.Tensor,  # [T, hidden]
        residual: torch.Tensor | None,  # [T, hidden], None before the first layer
        angles: ops.RotaryAngles,
        kv_caches: list[torch.Tensor],
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            x, residual = self.input_layernorm(x), x
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(x, angles, kv_caches, meta)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


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
        x, residual = self.embed_tokens(input_ids), None  # [T, hidden]
        angles = ops.rotary_angles(self.rotary_emb.cos_sin, positions)
        for layer in self.layers:
            x, residual = layer(x, residual, angles, kv_caches, meta)
        x, _ = self.norm(x, residual)
        return x


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
        if self.tie_word_embeddings:
            return F.linear(hidden, self.model.embed_tokens.weight).float()
        return self.lm_head(hidden).float()  # a module: quantization may replace it
