"""Qwen3 (dense): the Llama block with a per-head RMSNorm on q and k before rotary."""

from __future__ import annotations

from typing import Any

from kvserve.models.llama import AttentionOptions, LlamaForCausalLM


class Qwen3ForCausalLM(LlamaForCausalLM):
    """Qwen3 adds q_norm/k_norm (RMSNorm over head_dim) and drops Qwen2's qkv bias."""

    @classmethod
    def attention_options(cls, hf_config: Any) -> AttentionOptions:
        bias = bool(getattr(hf_config, "attention_bias", False))
        return AttentionOptions(qkv_bias=bias, o_bias=bias, qk_norm=True)
