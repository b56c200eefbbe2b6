"""The registry in an S3 bucket served by a real S3-protocol server (moto) on loopback."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import boto3
import pytest

from kvserve.control.checksum import IntegrityError
from kvserve.control.ref import ModelRef
from kvserve.control.registry import Registry, RegistryError, blob_key
from kvserve.control.registry_config import RegistryConfig
from kvserve.control.resolve import resolve
from kvserve.control.storage import open_storage
from tests.control.conftest import Cli


@pytest.fixture
def config(s3_bucket, s3_endpoint) -> RegistryConfig:
    return RegistryConfig(url=s3_bucket, s3_endpoint_url=s3_endpoint)


@pytest.fixture
def s3_models(capsys, s3_bucket, s3_endpoint) -> Cli:
    return Cli(capsys, ["--registry", s3_bucket, "--s3-endpoint-url", s3_endpoint])


def variant(model_dir: Path, out: Path, max_positions: int) -> Path:
    """A copy of the model whose config.json differs (the weights are shared)."""
    out.mkdir()
    for path in model_dir.iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "max_position_embeddings": max_positions}))
    return out


def test_push_tag_pull_verify_and_rm_through_the_cli(s3_models, model_dir, tmp_path):
    s3_models.ok("push", str(model_dir), "tiny:v1")
    s3_models.ok("tag", "tiny:v1", "stable")
    assert "tiny:v1: 6 files" in s3_models.ok("verify", "tiny@stable")
    s3_models.ok("pull", "tiny@stable", str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    rc, _, err = s3_models("rm", "tiny:v1")
    assert rc == 1 and "tagged stable" in err
    rc, _, err = s3_models("push", str(model_dir), "tiny:v1")
    assert rc == 1 and "already exists" in err


def test_concurrent_pushes_of_two_versions_leave_two_consistent_versions(config, model_dir, tmp_path):
    dirs = {f"v{i}": variant(model_dir, tmp_path / f"v{i}", 128 * i) for i in (1, 2)}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(dirs))

    def push(version: str) -> None:
        try:
            registry = Registry(open_storage(config))  # one client each, as two machines would have
            barrier.wait()
            registry.push(dirs[version], ModelRef("tiny", version))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(v,)) for v in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    registry = Registry(open_storage(config))
    assert [v.version for v in registry.versions("tiny")] == ["v1", "v2"]
    for version, source in dirs.items():
        registry.verify(ModelRef("tiny", version))
        local = resolve(ModelRef("tiny", version), config)
        assert json.loads((local / "config.json").read_text())["max_position_embeddings"] == int(version[1:]) * 128
        assert (local / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()


def test_concurrent_pushes_of_one_version_let_exactly_one_win(config, model_dir, tmp_path):
    dirs = [variant(model_dir, tmp_path / f"d{i}", 100 + i) for i in range(3)]
    outcomes: list[object] = []
    barrier = threading.Barrier(len(dirs))

    def push(source: Path) -> None:
        registry = Registry(open_storage(config))
        barrier.wait()
        try:
            outcomes.append(registry.push(source, ModelRef("tiny", "v1")))
        except RegistryError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=push, args=(d,)) for d in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(outcomes) == 3 and len(winners) == 1
    assert all("immutable" in str(o) for o in outcomes if isinstance(o, Exception))
    stored = Registry(open_storage(config)).verify(ModelRef("tiny", "v1"))
    assert stored == winners[0]  # the manifest that stayed is the winner's, and its blobs are all there


def test_a_manifest_is_only_written_after_its_blobs(config, model_dir, s3_endpoint):
    """Stop a push between blobs and manifest (a crash): readers see no version at all."""
    registry = Registry(open_storage(config))
    real_write = registry.storage.write

    def crash_before_manifest(key, data, exclusive=False):
        if key.startswith("manifests/"):
            raise KeyboardInterrupt
        return real_write(key, data, exclusive)

    registry.storage.write = crash_before_manifest
    with pytest.raises(KeyboardInterrupt):
        registry.push(model_dir, ModelRef("tiny", "v1"))
    fresh = Registry(open_storage(config))
    assert fresh.versions() == []
    with pytest.raises(RegistryError, match="not in the registry"):
        fresh.manifest(ModelRef("tiny", "v1"))


def test_a_corrupted_object_in_the_bucket_is_refused_naming_the_file(config, model_dir, s3_endpoint):
    registry = Registry(open_storage(config))
    manifest = registry.push(model_dir, ModelRef("tiny", "v1"))
    entry = next(f for f in manifest.files if f.path == "model.safetensors")
    bucket, prefix = config.s3_location()
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.put_object(Bucket=bucket, Key=f"{prefix}/{blob_key(entry.sha256)}", Body=b"\0" * entry.size)
    with pytest.raises(IntegrityError, match="tiny:v1 file model.safetensors: corrupted"):
        resolve("tiny:v1", config)


def test_a_file_larger_than_one_part_goes_up_in_parts_and_verifies(config, model_dir):
    (model_dir / "big.bin").write_bytes(bytes(range(256)) * (20 * 4096 + 7))  # 20 MiB + 1,792 B: two parts
    registry = Registry(open_storage(config))
    manifest = registry.push(model_dir, ModelRef("tiny", "v1"))
    big = next(f for f in manifest.files if f.path == "big.bin")
    assert registry.storage.size(blob_key(big.sha256)) == big.size
    registry.verify(ModelRef("tiny", "v1"))
