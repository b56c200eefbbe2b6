"""`--model org/name`: a Hugging Face model id, found in a cache laid out as the hub lays it out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvserve import LLM, SamplingParams
from kvserve.config import EngineConfig
from kvserve.models.hub import ModelNotFoundError, resolve_model

REVISION = "0123456789abcdef0123456789abcdef01234567"
MODEL_ID = "tiny-org/tiny-llama"


def hub_cache(root: Path, model_dir: Path, model_id: str = MODEL_ID) -> Path:
    """HF_HUB_CACHE/models--org--name/{refs/main, snapshots/<revision>/...} holding model_dir's files."""
    repo = root / f"models--{model_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return root


def test_a_model_id_resolves_to_its_cached_snapshot_and_is_served_under_it(tiny_llama, tmp_path):
    cache = hub_cache(tmp_path / "hub", tiny_llama)
    config = resolve_model(EngineConfig.from_flat(model=MODEL_ID), cache_dir=cache)
    assert config.model.model == str(cache / f"models--tiny-org--tiny-llama/snapshots/{REVISION}")
    assert config.model.served_model_name == MODEL_ID
    named = resolve_model(EngineConfig.from_flat(model=MODEL_ID, served_model_name="mine"), cache_dir=cache)
    assert named.model.served_model_name == "mine"


def test_the_embedded_model_id_is_the_embedded_model_and_a_directory_wins(tiny_llama):
    assert resolve_model(EngineConfig.from_flat(model="HuggingFaceTB/SmolLM2-135M-Instruct")).model.model is None
    assert resolve_model(EngineConfig.from_flat(model=str(tiny_llama))).model.model == str(tiny_llama)


def test_offline_a_missing_id_says_what_to_download_and_where(tmp_path):
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model(EngineConfig.from_flat(model="nobody/absent-model"), cache_dir=tmp_path)
    message = str(caught.value)
    assert "hf download nobody/absent-model" in message and str(tmp_path) in message
    assert "models--nobody--absent-model" in message


def test_generate_with_a_model_id_from_the_hub_cache(tiny_llama, tmp_path):
    cache = hub_cache(tmp_path / "hub", tiny_llama)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "kvserve.cli.main", "generate", "--no-chat", "--max-tokens", "8",
               "--kv-cache-gib", "0.01", "--model"]
    result = subprocess.run([*command, MODEL_ID, "Hello"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    expected = LLM(model=str(tiny_llama), kv_cache_gib=0.01).generate(
        "Hello", SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)[0].outputs[0].text
    assert result.stdout == expected + "\n"
    missing = subprocess.run([*command, "tiny-org/other", "Hello"], capture_output=True, text=True, env=env,
                             timeout=300)
    assert missing.returncode == 2 and "hf download tiny-org/other" in missing.stderr
    assert "Traceback" not in missing.stderr
