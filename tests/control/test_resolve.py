"""resolve(): a reference becomes a verified local directory, and `kvserve serve` loads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from kvserve.config import ConfigError, EngineConfig
from kvserve.control.checksum import IntegrityError
from kvserve.control.ref import ModelRef
from kvserve.control.registry import Registry, RegistryError
from kvserve.control.registry_config import RegistryConfig
from kvserve.control.resolve import resolve, with_registry_model
from kvserve.control.storage import LocalStorage
from tests.helpers import ServeProcess


@pytest.fixture
def registry(private_cache) -> Registry:
    """The default local registry (what `kvserve serve --model NAME:VERSION` reads)."""
    return Registry(LocalStorage(RegistryConfig().local_root()))


def damage(path: Path, keep: int | None = None) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    if keep is None:
        data[-1] ^= 0x01
    path.write_bytes(bytes(data if keep is None else data[:keep]))


def test_resolve_returns_a_verified_copy_and_reuses_it(registry, model_dir):
    registry.push(model_dir, ModelRef("tiny", "v1"))
    registry.tag(ModelRef("tiny", "v1"), "stable")
    first = resolve("tiny@stable")
    assert first.parent.parent == RegistryConfig().pulled_dir()
    assert {p.name: p.read_bytes() for p in first.iterdir()} == {p.name: p.read_bytes() for p in model_dir.iterdir()}
    inode = (first / "model.safetensors").stat().st_ino
    assert resolve("tiny:v1") == first and (first / "model.safetensors").stat().st_ino == inode


def test_a_damaged_cached_copy_is_fetched_again(registry, model_dir):
    registry.push(model_dir, ModelRef("tiny", "v1"))
    copy = resolve("tiny:v1")
    damage(copy / "model.safetensors")
    assert resolve("tiny:v1") == copy
    assert (copy / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_a_damaged_registry_blob_is_refused_naming_the_file(registry, model_dir, private_cache):
    manifest = registry.push(model_dir, ModelRef("tiny", "v1"))
    entry = next(f for f in manifest.files if f.path == "config.json")
    damage(private_cache / "registry" / "blobs" / "sha256" / entry.sha256, keep=10)
    with pytest.raises(IntegrityError, match="tiny:v1 file config.json: truncated"):
        resolve("tiny:v1")
    assert not list(RegistryConfig().pulled_dir().glob("tiny/v1-*"))


def test_engine_configs_resolve_references_and_leave_directories_alone(registry, model_dir):
    registry.push(model_dir, ModelRef("tiny", "v1"))
    plain = EngineConfig.from_flat(model=str(model_dir))
    assert with_registry_model(plain) == plain
    assert with_registry_model(EngineConfig()) == EngineConfig()
    config = with_registry_model(EngineConfig.from_flat(model="tiny:v1"))
    assert Path(config.model.model) == resolve("tiny:v1") and config.model.served_model_name == "tiny:v1"
    aliased = with_registry_model(EngineConfig.from_flat(model="tiny:v1", served_model_name="alias"))
    assert aliased.model.served_model_name == "alias"
    with pytest.raises(ConfigError, match="cannot load model tiny:v9 from the registry"):
        with_registry_model(EngineConfig.from_flat(model="tiny:v9"))
    with pytest.raises(RegistryError):
        resolve("tiny@stable")


def test_serve_loads_a_tagged_version_and_answers_under_its_reference(registry, model_dir, tmp_path):
    registry.push(model_dir, ModelRef("tiny", "v1"))
    registry.tag(ModelRef("tiny", "v1"), "stable")
    server = ServeProcess(["--model", "tiny@stable", "--max-model-len", "128"], tmp_path / "serve.log").launch()
    try:
        server.wait_ready()
        assert [m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]] == ["tiny@stable"]
        reply = httpx.post(server.url + "/v1/completions", timeout=60,
                           json={"model": "tiny@stable", "prompt": "hello", "max_tokens": 4})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] >= 1
    finally:
        server.stop()


def test_serve_refuses_a_corrupted_version_naming_the_file(registry, model_dir, private_cache):
    manifest = registry.push(model_dir, ModelRef("tiny", "v1"))
    entry = next(f for f in manifest.files if f.path == "model.safetensors")
    damage(private_cache / "registry" / "blobs" / "sha256" / entry.sha256)
    done = subprocess.run([sys.executable, "-m", "kvserve.cli.main", "serve", "--model", "tiny:v1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "tiny:v1 file model.safetensors: corrupted" in done.stderr


def test_references_resolve_through_the_registry_of_the_default_config_file(model_dir, tmp_path):
    shared = Registry(LocalStorage(tmp_path / "shared-registry"))
    shared.push(model_dir, ModelRef("tiny", "v1"))
    settings = Path.home() / ".config" / "kvserve" / "registry.yaml"
    settings.parent.mkdir(parents=True)
    settings.write_text(f"url: {tmp_path / 'shared-registry'}\ncache_dir: {tmp_path / 'pulled-here'}\n")
    config = with_registry_model(EngineConfig.from_flat(model="tiny:v1"))
    assert Path(config.model.model).parent.parent == tmp_path / "pulled-here"
