"""Named architecture shapes (config.json contents) for benchmarks on random weights.

Figures from the published config.json of each model. A shape directory holds the
config and a synthetic tokenizer covering the whole vocabulary, so that the same
directory serves `kvserve bench offline` (token ids only) and `kvserve serve` (which
needs a tokenizer to detokenize whatever random weights sample).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

from kvserve.config import ConfigError, EngineConfig

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


def shape_config(arch: str, min_positions: int | None = None) -> dict:
    """The config.json contents of a named shape, or of a given config.json path.

    `min_positions` raises max_position_embeddings when a workload needs one more position
    than the model has (an 8,192-token prompt on an 8,192-position model leaves no room to
    generate); with random weights nothing depends on what those positions would mean.
    """
    if arch in SHAPES:
        config = dict(SHAPES[arch])
    elif Path(arch).is_file():
        config = json.loads(Path(arch).read_text())
    else:
        raise ConfigError(f"unknown architecture shape {arch!r}: one of {sorted(SHAPES)} or a config.json path")
    if not isinstance(config.get("vocab_size"), int):
        raise ConfigError(f"the shape {arch!r} has no integer vocab_size")
    if min_positions and min_positions > config.get("max_position_embeddings", 0):
        config["max_position_embeddings"] = min_positions
    return config


def write_shape_dir(arch: str, out_dir: Path, min_positions: int | None = None) -> Path:
    """A model directory for `load_format="dummy"`: config.json and a synthetic tokenizer."""
    config = shape_config(arch, min_positions)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config, indent=1))
    write_synthetic_tokenizer(config["vocab_size"], out_dir)
    return out_dir


def synthetic_token(token_id: int) -> str:
    """The text of token `token_id` in the synthetic tokenizer: `t` and the id in hex."""
    return f"t{token_id:x}"


def write_synthetic_tokenizer(vocab_size: int, out_dir: Path) -> None:
    """tokenizer.json (+ tokenizer_config.json) with one word-level token per id.

    Token i is synthetic_token(i); text splits on whitespace and punctuation, a word that
    is no token becomes id 0, and decoding joins tokens with single spaces, so that every
    id detokenizes on its own and incrementally. No special tokens, no chat template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {synthetic_token(i): i for i in range(vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=synthetic_token(0)))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # no token has the prefix: a plain join
    tokenizer.save(str(out_dir / "tokenizer.json"))
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(settings, indent=1))


def with_shape_dir(config: EngineConfig) -> tuple[EngineConfig, tempfile.TemporaryDirectory | None]:
    """`config` with its `arch` written out as a shape directory, and that directory.

    The returned config loads random weights (load_format dummy) from a temporary
    directory and answers to the arch name unless a served_model_name was given; the
    caller keeps the TemporaryDirectory for as long as the engine may read it. A config
    without an `arch` comes back unchanged, with None.
    """
    model = config.model
    if not model.arch:
        return config, None
    shape_dir = tempfile.TemporaryDirectory(prefix="kvserve-shape-")
    try:
        write_shape_dir(model.arch, Path(shape_dir.name), model.max_model_len)
    except BaseException:
        shape_dir.cleanup()
        raise
    model = replace(model, model=shape_dir.name, arch=None, load_format="dummy",
                    served_model_name=model.served_model_name or model.arch)
    return replace(config, model=model), shape_dir
