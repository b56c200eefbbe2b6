"""Fixtures for server tests: real `kvserve serve` processes (tests/helpers.py) and the tiny models they serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CORPUS, build_model
from tests.helpers import ServeProcess


def start_server(tmp_path_factory: pytest.TempPathFactory, model: Path, *args: str) -> ServeProcess:
    log_dir = tmp_path_factory.mktemp("serve")
    data_dir = () if "--data-dir" in args else ("--data-dir", str(log_dir / "batches"))  # not the user's cache
    return ServeProcess(["--model", str(model), *data_dir, *args], log_dir / "server.log").start()


# The shared server answers to the name the embedded default model is served under, so
# that the quick-start snippets of docs/server.md run against it unchanged.
MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
TOOL_MODEL_NAME = "tiny-tools"  # what the tool model is served as


@pytest.fixture(scope="session")
def server(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory):
    """The shared server (tiny random Llama) for tests that do not care what else runs on it."""
    proc = start_server(tmp_path_factory, tiny_llama, "--served-model-name", MODEL_NAME, "--max-model-len", "256")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def slower_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Llama big enough that a long generation takes seconds on the CPU, so that a
    test can act (disconnect, scrape metrics) while it is still running."""
    return build_model("llama", tmp_path_factory.mktemp("slower-llama"), hidden_size=256, intermediate_size=1024,
                       num_hidden_layers=4, max_position_embeddings=2048)


# Llama 3's control tokens and the shape of its chat template (the content trimmed, as Meta's does)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def build_llama3_tokenizer(out_dir: Path, vocab_size: int = 384):
    """A tiny BPE tokenizer with Llama 3's special tokens (`<|eot_id|>` is id 2, the eos of
    `build_model`'s config, so it can replace the ChatML tokenizer of a built model)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=LLAMA3_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|end_of_text|>", unk_token=None)
    fast.chat_template = LLAMA3_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


@pytest.fixture(scope="session")
def tiny_llama_llama3_tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama with a tokenizer that speaks Llama 3's chat format."""
    out_dir = build_model("llama", tmp_path_factory.mktemp("tiny-llama-l3-tokens"))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (out_dir / name).unlink(missing_ok=True)
    build_llama3_tokenizer(out_dir)
    return out_dir


class RegistryHome:
    """A private ~/.cache/kvserve (registry and pulled copies) for servers that load
    NAME:VERSION references: `push` stores a model directory, `serve` starts
    `kvserve serve ARGS` with that home."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache = root / "cache"  # XDG_CACHE_HOME: the default registry is cache/kvserve/registry
        self.registry_dir = self.cache / "kvserve" / "registry"

    def push(self, model_dir: Path, ref: str) -> None:
        from kvserve.control.ref import ModelRef
        from kvserve.control.registry import Registry
        from kvserve.control.registry_config import RegistryConfig
        from kvserve.control.storage import open_storage

        Registry(open_storage(RegistryConfig(url=str(self.registry_dir)))).push(model_dir, ModelRef.parse(ref))

    def serve(self, *args: str) -> ServeProcess:
        proc = ServeProcess(list(args), self.root / "server.log")
        assert proc.env is not None
        proc.env.update(XDG_CACHE_HOME=str(self.cache), HOME=str(self.root / "home"))
        return proc.start()


@pytest.fixture(scope="session")
def tool_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3 speaking Qwen's tool and thinking formats (tests/server/tool_models.py)."""
    from tests.server.tool_models import build_tool_model

    return build_tool_model(tmp_path_factory.mktemp("tool-model"))


@pytest.fixture(scope="session")
def tool_server(tool_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tool model served without a reasoning parser (tools and structured outputs tests)."""
    proc = start_server(tmp_path_factory, tool_model, "--kv-cache-gib", "0.05", "--max-model-len", "1024",
                        "--served-model-name", TOOL_MODEL_NAME)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory):
    """`kvserve serve` on the embedded SmolLM2-135M-Instruct (slow to start: tests using it are slow)."""
    log_path = tmp_path_factory.mktemp("serve-embedded") / "server.log"
    proc = ServeProcess(["--kv-cache-gib", "0.5"], log_path).launch()
    proc.wait_ready(timeout=600)
    yield proc
    proc.stop()
