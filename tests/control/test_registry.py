"""`kvserve models` on a local registry: immutable versions, shared blobs, tags, refusals."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
from safetensors import safe_open

from kvserve.cli.main import main
from kvserve.control.checksum import IntegrityError
from kvserve.control.manifest import Manifest
from kvserve.control.ref import ModelRef
from kvserve.control.registry import Registry, RegistryError
from kvserve.control.storage import LocalStorage


def blobs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "registry" / "blobs" / "sha256").iterdir())


def test_push_records_a_manifest_that_describes_the_model(models, model_dir):
    models.ok("push", str(model_dir), "tiny:v1", "--label", "team=search")
    manifest = Manifest.from_json(models.ok("show", "tiny:v1").encode())
    with safe_open(model_dir / "model.safetensors", "pt") as f:
        elements = sum(f.get_tensor(k).numel() for k in f.keys())
    assert (manifest.name, manifest.version, manifest.architecture) == ("tiny", "v1", "LlamaForCausalLM")
    assert manifest.parameter_count == elements and manifest.dtype == "float32"
    assert manifest.tokenizer and manifest.chat_template and manifest.labels == {"team": "search"}
    assert {f.path: f.size for f in manifest.files} == {p.name: p.stat().st_size for p in model_dir.iterdir()}
    assert manifest.source == str(model_dir.resolve())


def test_versions_are_immutable(models, model_dir):
    models.ok("push", str(model_dir), "tiny:v1")
    rc, _, err = models("push", str(model_dir), "tiny:v1")
    assert rc == 1 and "tiny:v1 already exists" in err and "immutable" in err


def test_versions_share_identical_files(models, model_dir, tmp_path):
    models.ok("push", str(model_dir), "tiny:v1")
    first = len(blobs(tmp_path))
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 256}))
    models.ok("push", str(model_dir), "tiny:v2")
    assert len(blobs(tmp_path)) == first + 1  # only the changed config.json is new


def test_tags_move_and_resolve(models, model_dir):
    models.ok("push", str(model_dir), "tiny:v1")
    models.ok("push", str(model_dir), "tiny:v2", "--label", "x=y")
    assert models.ok("tag", "tiny:v1", "stable").strip() == "tiny@stable -> v1"
    assert Manifest.from_json(models.ok("show", "tiny@stable").encode()).version == "v1"
    models.ok("tag", "tiny:v2", "stable")
    assert Manifest.from_json(models.ok("show", "tiny@stable").encode()).version == "v2"
    listing = {(r["version"], tuple(r["tags"])) for r in json.loads(models.ok("list", "--json"))}
    assert listing == {("v1", ()), ("v2", ("stable",))}
    rc, _, err = models("show", "tiny@canary")
    assert rc == 1 and "no tag tiny@canary" in err


def test_rm_is_refused_while_tagged_and_keeps_blobs_other_versions_use(models, model_dir, tmp_path):
    models.ok("push", str(model_dir), "tiny:v1")
    shared = set(blobs(tmp_path))
    (model_dir / "extra.txt").write_text("only in v2")
    models.ok("push", str(model_dir), "tiny:v2")
    models.ok("tag", "tiny:v2", "canary")
    rc, _, err = models("rm", "tiny:v2")
    assert rc == 1 and "tagged canary" in err
    models.ok("untag", "tiny@canary")
    models.ok("rm", "tiny:v2")
    assert set(blobs(tmp_path)) == shared  # v2's own blob is gone, v1's are all there
    models.ok("verify", "tiny:v1")
    rc, _, err = models("show", "tiny:v2")
    assert rc == 1 and "not in the registry" in err


def test_pull_writes_the_same_files(models, model_dir, tmp_path):
    models.ok("push", str(model_dir), "tiny:v1")
    models.ok("tag", "tiny:v1", "stable")
    out = models.ok("pull", "tiny@stable", str(tmp_path / "copy"))
    assert "6 files verified" in out
    for path in model_dir.iterdir():
        assert (tmp_path / "copy" / path.name).read_bytes() == path.read_bytes()
    rc, _, err = models("pull", "tiny:v1", str(tmp_path / "copy"))
    assert rc == 1 and "not an empty directory" in err


def test_a_corrupted_blob_is_refused_by_verify_and_pull_naming_the_file(models, model_dir, tmp_path):
    models.ok("push", str(model_dir), "tiny:v1")
    manifest = Manifest.from_json(models.ok("show", "tiny:v1").encode())
    weights = next(f for f in manifest.files if f.path == "model.safetensors")
    blob = tmp_path / "registry" / "blobs" / "sha256" / weights.sha256
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    blob.write_bytes(bytes(data))
    rc, _, err = models("verify", "tiny:v1")
    assert rc == 1 and "tiny:v1 file model.safetensors: corrupted" in err
    rc, _, err = models("pull", "tiny:v1", str(tmp_path / "copy"))
    assert rc == 1 and "model.safetensors: corrupted" in err
    assert not (tmp_path / "copy").exists() and not list(tmp_path.glob(".copy.partial-*"))


def test_a_truncated_blob_is_refused_naming_the_file(models, model_dir, tmp_path):
    models.ok("push", str(model_dir), "tiny:v1")
    manifest = Manifest.from_json(models.ok("show", "tiny:v1").encode())
    tokenizer = next(f for f in manifest.files if f.path == "tokenizer.json")
    blob = tmp_path / "registry" / "blobs" / "sha256" / tokenizer.sha256
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:100])
    rc, _, err = models("verify", "tiny:v1")
    assert rc == 1 and "file tokenizer.json: truncated" in err


def test_bad_references_and_names_are_refused(models, model_dir):
    for ref in ("tiny", "../etc:v1", "tiny:v1/../../x", "tiny:", "tiny@", ":v1"):
        rc, _, err = models("push", str(model_dir), ref)
        assert rc == 1 and "error" in err, ref
    rc, _, err = models("push", str(model_dir / "nope"), "tiny:v1")
    assert rc == 1 and "not a directory" in err


def test_hidden_files_are_not_part_of_a_version(models, model_dir):
    (model_dir / ".git").mkdir()
    (model_dir / ".git" / "HEAD").write_text("ref")
    models.ok("push", str(model_dir), "tiny:v1")
    manifest = Manifest.from_json(models.ok("show", "tiny:v1").encode())
    assert all(not f.path.startswith(".") for f in manifest.files)


def test_symlinked_files_are_stored_with_their_contents(models, model_dir, tmp_path):
    """A Hugging Face cache snapshot is a directory of symbolic links to blobs."""
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for path in model_dir.iterdir():
        (snapshot / path.name).symlink_to(path)
    models.ok("push", str(snapshot), "tiny:v1")
    models.ok("pull", "tiny:v1", str(tmp_path / "copy"))
    copy = tmp_path / "copy" / "model.safetensors"
    assert not copy.is_symlink() and copy.read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_the_registry_can_come_from_a_yaml_file(capsys, model_dir, tmp_path):
    settings = tmp_path / "registry.yaml"
    settings.write_text(f"url: file://{tmp_path / 'from-yaml'}\n")
    assert main(["models", "push", str(model_dir), "tiny:v1", "--registry-config", str(settings), "--no-progress"]) == 0
    assert (tmp_path / "from-yaml" / "manifests" / "tiny" / "v1.json").is_file()
    settings.write_text("url: ftp://example.com/models\n")
    assert main(["models", "list", "--registry-config", str(settings)]) == 1
    assert "registry URL must be file://, s3:// or a directory" in capsys.readouterr().err
    settings.write_text("registry_url: /tmp/x\n")
    assert main(["models", "list", "--registry-config", str(settings)]) == 1
    assert "unknown setting(s)" in capsys.readouterr().err


def test_racing_pushes_of_one_version_to_a_local_registry_let_exactly_one_win(model_dir, tmp_path):
    sources = []
    for i in range(3):
        source = tmp_path / f"src{i}"
        source.mkdir()
        (source / "config.json").write_text(json.dumps({"variant": i}))
        (source / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
        sources.append(source)
    barrier, outcomes = threading.Barrier(3), []

    def push(source: Path) -> None:
        registry = Registry(LocalStorage(tmp_path / "registry"))
        barrier.wait()
        try:
            outcomes.append(registry.push(source, ModelRef("tiny", "v1")))
        except RegistryError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=push, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [o for o in outcomes if isinstance(o, Manifest)]
    assert len(outcomes) == 3 and len(winners) == 1
    assert Registry(LocalStorage(tmp_path / "registry")).verify(ModelRef("tiny", "v1")) == winners[0]


def test_a_push_puts_back_a_blob_that_a_racing_rm_deleted(model_dir, tmp_path):
    """rm of v1 listed the manifests before v2's was written and deletes a blob v2 reuses."""
    registry = Registry(LocalStorage(tmp_path / "registry"))
    v1 = registry.push(model_dir, ModelRef("tiny", "v1"))
    real_write = registry.storage.write

    def write_then_race(key, data, exclusive=False):
        written = real_write(key, data, exclusive)
        if key.endswith("v2.json"):  # v2's manifest is in; the racing rm deletes v1's blobs now
            for entry in v1.files:
                registry.storage.delete(f"blobs/sha256/{entry.sha256}")
        return written

    registry.storage.write = write_then_race
    registry.push(model_dir, ModelRef("tiny", "v2"))
    Registry(LocalStorage(tmp_path / "registry")).verify(ModelRef("tiny", "v2"))


def test_a_file_that_changes_while_pushed_is_refused_and_leaves_no_blob(model_dir, tmp_path, monkeypatch):
    from kvserve.control import registry as registry_module

    real_describe = registry_module.describe

    def describe_then_edit(model_dir, *args, **kwargs):
        manifest = real_describe(model_dir, *args, **kwargs)
        (model_dir / "tokenizer_config.json").write_text('{"edited": "after hashing"}')
        return manifest

    monkeypatch.setattr(registry_module, "describe", describe_then_edit)
    registry = Registry(LocalStorage(tmp_path / "registry"))
    with pytest.raises(IntegrityError, match="tokenizer_config.json changed while it was being pushed"):
        registry.push(model_dir, ModelRef("tiny", "v1"))
    assert registry.versions() == []
    for blob in (tmp_path / "registry" / "blobs" / "sha256").iterdir():  # no blob under a digest it lacks
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    monkeypatch.setattr(registry_module, "describe", real_describe)
    registry.push(model_dir, ModelRef("tiny", "v1"))
    registry.verify(ModelRef("tiny", "v1"))
