"""Named architecture shapes (config.json contents) for benchmarks on random weights.

Figures from the published config.json of each model.
"""

from __future__ import annotations

import json
from pathlib import Path

_QWEN3_0_6B = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024,
    "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
    "head_dim": 128, "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "eos_token_id": 151645,
}
_LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "eos_token_id": 128001,
}
_QWEN2_5_0_5B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
    "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
    "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "eos_token_id": 151645,
}
_SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
    "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "eos_token_id": 2,
}

SHAPES: dict[str, dict] = {
    "qwen3-0.6b": _QWEN3_0_6B,
    "llama3-8b": _LLAMA3_8B,
    "qwen2.5-0.5b": _QWEN2_5_0_5B,
    "smollm2-135m": _SMOLLM2_135M,
}


def write_shape_dir(arch: str, out_dir: Path, min_positions: int | None = None) -> Path:
    """A model directory holding only config.json: a named shape, or a given config.json path.

    `min_positions` raises max_position_embeddings when a workload needs one more position
    than the model has (an 8,192-token prompt on an 8,192-position model leaves no room to
    generate); with random weights nothing depends on what those positions would mean.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if arch in SHAPES:
        config = dict(SHAPES[arch])
    elif Path(arch).is_file():
        config = json.loads(Path(arch).read_text())
    else:
        raise ValueError(f"unknown architecture shape {arch!r}: one of {sorted(SHAPES)} or a config.json path")
    if min_positions and min_positions > config.get("max_position_embeddings", 0):
        config["max_position_embeddings"] = min_positions
    (out_dir / "config.json").write_text(json.dumps(config, indent=1))
    return out_dir
