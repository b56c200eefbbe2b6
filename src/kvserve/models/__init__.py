"""Model architectures, picked by the `architectures` entry of a checkpoint's config.json."""

from kvserve.models.llama import LlamaForCausalLM
from kvserve.models.qwen2 import Qwen2ForCausalLM
from kvserve.models.qwen3 import Qwen3ForCausalLM

ARCHITECTURES: dict[str, type] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": Qwen2ForCausalLM,
    "Qwen3ForCausalLM": Qwen3ForCausalLM,
}

__all__ = ["ARCHITECTURES", "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"]
