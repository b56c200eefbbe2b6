"""Qwen2 / Qwen2.5: the Llama block with a bias on the q, k and v projections."""

from __future__ import annotations

from typing import Any

from kvserve.models.llama import AttentionOptions, LlamaForCausalLM


class Qwen2ForCausalLM(LlamaForCausalLM):
    """Qwen2 differs from Llama only in its always-on qkv bias (o_proj has none)."""

    @classmethod
    def attention_options(cls, hf_config: Any) -> AttentionOptions:
        return AttentionOptions(qkv_bias=True)
