"""Shared fixtures: tiny random Hugging Face models with a locally trained tokenizer.

Built once per test session (seconds on 2 cores) under pytest's temp directory, so the
suite needs no network and no downloaded weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Hello world! How are you today? I am fine, thank you.",
    "def add(a, b):\n    return a + b\n",
    "Continuous batching schedules running requests first, then waiting ones.",
    "Paged attention stores keys and values in blocks of sixteen tokens.",
    "Größe, naïve café, 東京, emoji 🙂 and other multi-byte UTF-8 text.",
    "0123456789 + - * / = ( ) [ ] { } < > , . ; : ! ? ' \"",
] * 20

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(out_dir: Path, vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        bos_token=None,
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def build_model(arch: str, out_dir: Path, **overrides) -> Path:
    """Save a tiny random model of `arch` (llama | qwen2 | qwen3) with a tokenizer into out_dir."""
    import torch
    import transformers

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out_dir)
    common = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        initializer_range=0.1,  # peaky logits, so that greedy decoding has no near-ties
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    kinds = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {}),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, {"head_dim": 32}),
    }
    config_cls, model_cls, extra = kinds[arch]
    config = config_cls(**{**common, **extra, **overrides})
    torch.manual_seed(0)
    model = model_cls(config).to(torch.float32)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_model("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    return build_model("qwen2", tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> Path:
    return build_model("qwen3", tmp_path_factory.mktemp("tiny-qwen3"), tie_word_embeddings=True)


@pytest.fixture(scope="session")
def tiny_llama3_rope(tmp_path_factory) -> Path:
    """Llama with rope_scaling type llama3 (as Llama 3.1+ checkpoints have)."""
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    return build_model("llama", tmp_path_factory.mktemp("tiny-llama3"), rope_scaling=scaling, rope_theta=500000.0)


@pytest.fixture(params=["llama", "qwen2", "qwen3"])
def tiny_model(request) -> Path:
    """Each supported architecture in turn."""
    return request.getfixturevalue(f"tiny_{request.param}")


# A tiny Qwen3 shape for `--arch` (random weights, synthetic tokenizer): starts in seconds on the CPU.
TINY_SHAPE = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 1000, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 16, "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "tie_word_embeddings": True, "torch_dtype": "float32", "eos_token_id": 1,
}


def write_tiny_shape(out_dir: Path) -> Path:
    """TINY_SHAPE as a config.json file in out_dir (the argument `--arch` takes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "tiny-config.json"
    path.write_text(json.dumps(TINY_SHAPE))
    return path


@pytest.fixture(scope="session")
def arch_server(tmp_path_factory):
    """`kvserve serve --arch <tiny config.json>` on a free loopback port, shared by the session."""
    from tests.helpers import ServeProcess

    arch = write_tiny_shape(tmp_path_factory.mktemp("tiny-shape"))
    log = tmp_path_factory.mktemp("arch-serve") / "server.log"
    server = ServeProcess(["--arch", str(arch), "--kv-cache-gib", "0.05"], log).start()
    server.arch = str(arch)
    yield server
    server.stop()

