"""Manifests: what a registry reader trusts, so malformed or hostile ones are refused."""

from __future__ import annotations

import json

import pytest

from kvserve.control.manifest import ManifestError, Manifest, describe

GOOD_FILE = {"path": "model.safetensors", "size": 3, "sha256": "a" * 64}


def manifest_json(**changes) -> bytes:
    data = {"schema": 1, "name": "m", "version": "v1", "architecture": None, "dtype": None, "parameter_count": 0,
            "files": [GOOD_FILE], "tokenizer": False, "chat_template": False, "source": "x",
            "created": "2026-01-01T00:00:00+00:00", "labels": {}}
    return json.dumps({**data, **changes}).encode()


def test_round_trip_keeps_every_field(tiny_llama):
    manifest = describe(tiny_llama, "tiny", "v1", "here", {"a": "b"})
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest and again.digest() == manifest.digest()


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a/../../b", "a//b", "./x", "a\\..\\b", ""])
def test_paths_that_leave_the_model_directory_are_refused(path):
    with pytest.raises(ManifestError, match="unsafe file path"):
        Manifest.from_json(manifest_json(files=[{**GOOD_FILE, "path": path}]))


@pytest.mark.parametrize("changes", [
    {"files": [{**GOOD_FILE, "sha256": "zz"}]},
    {"files": [{**GOOD_FILE, "size": -1}]},
    {"files": [GOOD_FILE, GOOD_FILE]},
    {"name": "../x"},
    {"schema": 99},
    {"labels": {"k": 5}},
    {"unexpected": 1},
])
def test_malformed_manifests_are_refused(changes):
    with pytest.raises(ManifestError):
        Manifest.from_json(manifest_json(**changes))


def test_a_file_that_is_not_safetensors_is_named(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(ManifestError, match="broken.safetensors is not a safetensors file"):
        describe(tmp_path, "m", "v1", "here")
