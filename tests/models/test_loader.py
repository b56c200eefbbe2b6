"""Checkpoint loading: weights in place, sharded files, dtype choice, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from kvserve.attention.torch_backend import TorchAttentionBackend
from kvserve.models.loader import ModelLoadError, cpu_has_fast_bf16, hf_state_dict, load_hf_config, load_model, model_info, resolve_dtype

from .paged import PagedSession


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def load(model_dir, dtype=torch.float32):
    return load_model(model_dir, TorchAttentionBackend(), dtype, "cpu")


def test_weights_land_in_target_dtype_with_float32_rotary(tiny_llama):
    model = load(tiny_llama, torch.bfloat16)
    stored = load_file(tiny_llama / "model.safetensors")
    for param in model.parameters():
        assert param.dtype == torch.bfloat16 and not param.requires_grad
    ours = hf_state_dict(model)  # merged q|k|v and gate|up sliced back into HF's tensors
    assert set(ours) == set(stored)
    for name, tensor in ours.items():
        assert torch.equal(tensor, stored[name].to(torch.bfloat16)), name
    assert model.model.rotary_emb.cos_sin.dtype == torch.float32


def test_sharded_checkpoint_loads_like_single_file(tiny_qwen2, tmp_path):
    from transformers import AutoModelForCausalLM

    sharded = tmp_path / "sharded"
    copy_model(tiny_qwen2, sharded)
    (sharded / "model.safetensors").unlink()
    AutoModelForCausalLM.from_pretrained(tiny_qwen2).save_pretrained(sharded, max_shard_size="40KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2 and not (sharded / "model.safetensors").exists()

    tokens = {0: list(range(5, 30)), 1: list(range(40, 47))}
    for ours, reference in zip(PagedSession(sharded).step(tokens), PagedSession(tiny_qwen2).step(tokens)):
        assert torch.equal(ours, reference)


def test_missing_directory_config_and_weights(tiny_llama, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(tmp_path / "nowhere")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load(tmp_path)
    empty = tmp_path / "no-weights"
    empty.mkdir()
    shutil.copy(tiny_llama / "config.json", empty)
    with pytest.raises(ModelLoadError, match=r"no \*\.safetensors weight files"):
        load(empty)


def test_unsupported_architecture_lists_supported_ones(tiny_llama, tmp_path):
    model_dir = copy_model(tiny_llama, tmp_path / "gpt2")
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ModelLoadError, match=r"unsupported architecture \['GPT2LMHeadModel'\].*Qwen3ForCausalLM"):
        load(model_dir)


def test_missing_and_unexpected_weights_are_named(tiny_llama, tmp_path):
    model_dir = copy_model(tiny_llama, tmp_path / "broken")
    tensors = load_file(model_dir / "model.safetensors")
    tensors["model.layers.1.extra.weight"] = tensors.pop("model.layers.1.mlp.up_proj.weight")
    save_file(tensors, model_dir / "model.safetensors")
    with pytest.raises(ModelLoadError) as err:
        load(model_dir)
    assert "1 missing (model.layers.1.mlp.up_proj.weight)" in str(err.value)
    assert "1 unexpected (model.layers.1.extra.weight)" in str(err.value)


def test_shape_mismatch_is_named(tiny_llama, tmp_path):
    model_dir = copy_model(tiny_llama, tmp_path / "wide")
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    with pytest.raises(ModelLoadError, match=r"model.layers.0.mlp.down_proj.weight: checkpoint \(64, 128\) vs model \(64, 96\)"):
        load(model_dir)


def test_ignores_saved_rotary_frequencies_and_tied_lm_head_copies(tiny_qwen3, tmp_path):
    model_dir = copy_model(tiny_qwen3, tmp_path / "extra")
    tensors = load_file(model_dir / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(16)
    save_file(tensors, model_dir / "model.safetensors")
    assert not hasattr(load(model_dir), "lm_head")


def test_resolve_dtype(tiny_llama):
    hf_config = load_hf_config(tiny_llama)  # saved in float32
    assert resolve_dtype("auto", hf_config, "cpu") == torch.float32
    assert resolve_dtype("auto", hf_config, "cuda") == torch.float32
    hf_config.dtype = "bfloat16"
    assert resolve_dtype("auto", hf_config, "cuda") == torch.bfloat16
    # a 16-bit checkpoint on the CPU: bfloat16 where the CPU has bf16 instructions
    assert resolve_dtype("auto", hf_config, "cpu") == (torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)
    assert resolve_dtype("float16", hf_config, "cpu") == torch.float16
    with pytest.raises(ValueError, match="dtype must be"):
        resolve_dtype("int8", hf_config, "cpu")


def test_fast_bf16_is_read_from_the_cpu_flags(tmp_path):
    (tmp_path / "avx512").write_text("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    (tmp_path / "amx").write_text("flags : fpu avx2 amx_bf16 amx_tile\n")
    (tmp_path / "old").write_text("flags : fpu sse2 avx2 avx512f\n")
    assert cpu_has_fast_bf16(tmp_path / "avx512") and cpu_has_fast_bf16(tmp_path / "amx")
    assert not cpu_has_fast_bf16(tmp_path / "old") and not cpu_has_fast_bf16(tmp_path / "missing")


def test_model_info_merges_eos_ids_of_both_configs(tiny_qwen3, tmp_path):
    info = model_info(load_hf_config(tiny_qwen3), tiny_qwen3)
    assert (info.num_layers, info.num_kv_heads, info.head_dim) == (2, 2, 32)
    assert info.max_position_embeddings == 512 and info.vocab_size == 384
    eos = info.eos_token_ids
    assert len(eos) == 1

    model_dir = copy_model(tiny_qwen3, tmp_path / "two-eos")
    (model_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos[0], 0]}))
    assert model_info(load_hf_config(model_dir)).eos_token_ids == (eos[0], 0)


def test_sliding_window_bounds_the_context(tiny_llama):
    hf_config = load_hf_config(tiny_llama)
    hf_config.sliding_window = 128
    assert model_info(hf_config, tiny_llama).max_position_embeddings == 128
