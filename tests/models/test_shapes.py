"""Shape directories: config.json of a named shape plus a synthetic tokenizer of its whole vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvserve.config import ConfigError, EngineConfig
from kvserve.engine.detokenizer import IncrementalDetokenizer
from kvserve.models.shapes import SHAPES, shape_config, synthetic_token, with_shape_dir, write_shape_dir
from kvserve.tokenizer import load_tokenizer
from tests.conftest import write_tiny_shape


def test_every_id_of_a_small_vocab_round_trips_through_the_servers_tokenizer_loader(tmp_path):
    model_dir = write_shape_dir(str(write_tiny_shape(tmp_path)), tmp_path / "shape")
    tokenizer = load_tokenizer(model_dir)
    ids = list(range(1000))
    assert len(tokenizer) == 1000
    assert [tokenizer.decode([i]) for i in ids] == [synthetic_token(i) for i in ids]
    text = tokenizer.decode(ids)
    assert text == " ".join(synthetic_token(i) for i in ids)
    assert tokenizer.encode(text, add_special_tokens=False) == ids
    assert tokenizer.encode("no such words", add_special_tokens=False) == [0, 0, 0]  # unknown words: id 0


def test_incremental_detokenization_joins_tokens_with_spaces(tmp_path):
    tokenizer = load_tokenizer(write_shape_dir(str(write_tiny_shape(tmp_path)), tmp_path / "shape"))
    detok = IncrementalDetokenizer(tokenizer, [5, 6, 7], stop=[])
    for token_id in (999, 0, 42):
        detok.add_tokens([token_id])
    assert detok.take_new_text(finished=True) == " t3e7 t0 t2a"


def test_the_qwen3_shape_gets_a_tokenizer_of_its_full_vocabulary(tmp_path):
    model_dir = write_shape_dir("qwen3-0.6b", tmp_path / "qwen3", min_positions=2048)
    config = json.loads((model_dir / "config.json").read_text())
    assert config == SHAPES["qwen3-0.6b"]  # 40,960 positions already cover 2,048
    tokenizer = load_tokenizer(model_dir)
    vocab = SHAPES["qwen3-0.6b"]["vocab_size"]
    assert len(tokenizer) == vocab == 151936
    assert tokenizer.decode([0, vocab - 1, config["eos_token_id"]]) == "t0 t2517f t2505d"


def test_min_positions_raises_the_context_and_unknown_shapes_are_config_errors(tmp_path):
    assert shape_config("llama3-8b", min_positions=8448)["max_position_embeddings"] == 8448
    with pytest.raises(ConfigError, match="unknown architecture shape 'nope'"):
        shape_config("nope")
    no_vocab = tmp_path / "config.json"
    no_vocab.write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ConfigError, match="vocab_size"):
        shape_config(str(no_vocab))


def test_an_arch_becomes_a_temporary_dummy_model_served_under_its_name(tmp_path):
    arch = str(write_tiny_shape(tmp_path))
    config, shape_dir = with_shape_dir(EngineConfig.from_flat(arch=arch, max_model_len=1024))
    model_dir = Path(shape_dir.name)
    assert config.model.model == str(model_dir) and config.model.arch is None
    assert config.model.load_format == "dummy" and config.model.served_model_name == arch
    assert json.loads((model_dir / "config.json").read_text())["max_position_embeddings"] == 1024
    assert (model_dir / "tokenizer.json").is_file()
    shape_dir.cleanup()
    assert not model_dir.exists()
    named, other_dir = with_shape_dir(EngineConfig.from_flat(arch="smollm2-135m", served_model_name="alias"))
    assert named.model.served_model_name == "alias"
    other_dir.cleanup()


def test_a_config_without_arch_is_left_alone_and_model_excludes_arch():
    config = EngineConfig.from_flat(model="/m")
    assert with_shape_dir(config) == (config, None)
    with pytest.raises(ConfigError, match="mutually exclusive"):
        EngineConfig.from_flat(model="/m", arch="qwen3-0.6b")
