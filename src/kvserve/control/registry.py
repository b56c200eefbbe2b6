"""The model registry: immutable, checksummed versions over a Storage.

Layout of the storage:
    blobs/sha256/<hex>            file contents, by digest (shared between versions)
    manifests/<name>/<version>.json
    tags/<name>/<tag>.json        {"version": ...}: a movable name for a version

A push uploads the blobs first and writes the manifest last, exclusively: a reader that
finds a manifest finds every blob it lists, and of two pushes of one name:version
exactly one succeeds. Versions never change; tags move.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kvserve.control.checksum import (
    HashingReader, IntegrityError, Progress, ProgressFactory, check, copy_verified, no_progress, sha256_of,
)
from kvserve.control.manifest import FileEntry, Manifest, describe, model_files
from kvserve.control.ref import ModelRef, check_part
from kvserve.control.errors import StorageError
from kvserve.control.storage import Storage


class RegistryError(RuntimeError):
    """A registry operation that cannot be done: unknown model, version exists, tag in use."""


@dataclass(frozen=True)
class ListedVersion:
    """One line of `kvserve models list`."""

    name: str
    version: str
    created: str
    total_bytes: int
    tags: tuple[str, ...]


def blob_key(sha256: str) -> str:
    return f"blobs/sha256/{sha256}"


def manifest_key(name: str, version: str) -> str:
    return f"manifests/{name}/{version}.json"


def tag_key(name: str, tag: str) -> str:
    return f"tags/{name}/{tag}.json"


class Registry:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def push(self, model_dir: Path, ref: ModelRef, source: str | None = None, labels: dict[str, str] | None = None,
             progress: ProgressFactory = no_progress) -> Manifest:
        """Store `model_dir` as the new version `ref`; RegistryError if that version exists."""
        version = self._require_version(ref)
        if self.storage.size(manifest_key(ref.name, version)) is not None:
            raise RegistryError(f"{ref} already exists in {self.storage.describe()}: versions are immutable")
        with progress(f"hashing {ref}", _dir_bytes(model_dir)) as step:
            manifest = describe(model_dir, ref.name, version, source or str(model_dir.resolve()), labels, step)
        self._upload_missing(model_dir, manifest, progress)
        if not self.storage.write(manifest_key(ref.name, version), manifest.to_json(), exclusive=True):
            raise RegistryError(f"{ref} was pushed by someone else meanwhile: versions are immutable")
        # An `rm` that listed the manifests before ours was written may have deleted a
        # blob we reused; put back whatever went missing.
        self._upload_missing(model_dir, manifest, progress)
        return manifest

    def manifest(self, ref: ModelRef) -> Manifest:
        """The manifest of a version, or of the version a tag points at."""
        version = self.version_of(ref)
        raw = self.storage.read(manifest_key(ref.name, version))
        if raw is None:
            raise RegistryError(f"{ref.name}:{version} is not in the registry {self.storage.describe()}")
        return Manifest.from_json(raw)

    def version_of(self, ref: ModelRef) -> str:
        if ref.version is not None:
            return ref.version
        raw = self.storage.read(tag_key(ref.name, ref.tag))
        if raw is None:
            raise RegistryError(f"no tag {ref} in the registry {self.storage.describe()}")
        try:
            return check_part("version", json.loads(raw)["version"])
        except (ValueError, KeyError, TypeError):
            raise RegistryError(f"tag {ref} is malformed in {self.storage.describe()}") from None

    def versions(self, name: str | None = None) -> list[ListedVersion]:
        prefix = f"manifests/{check_part('model name', name)}/" if name else "manifests/"
        tags: dict[tuple[str, str], list[str]] = {}
        for model in {k.split("/")[1] for k in self.storage.list(prefix)}:
            for tag, version in self.tags(model).items():
                tags.setdefault((model, version), []).append(tag)
        listed = []
        for key in self.storage.list(prefix):
            raw = self.storage.read(key)
            if raw is None:
                continue  # removed while listing
            m = Manifest.from_json(raw)
            held = tuple(tags.get((m.name, m.version), ()))
            listed.append(ListedVersion(m.name, m.version, m.created, m.total_bytes, held))
        return listed

    def tags(self, name: str) -> dict[str, str]:
        """tag -> version for one model."""
        found = {}
        for key in self.storage.list(f"tags/{check_part('model name', name)}/"):
            tag = key.rsplit("/", 1)[1].removesuffix(".json")
            found[tag] = self.version_of(ModelRef(name, tag=tag))
        return found

    def tag(self, ref: ModelRef, tag: str) -> Manifest:
        """Point `NAME@tag` at the version `ref` names (moving the tag if it exists)."""
        manifest = self.manifest(ref)
        body = json.dumps({"version": manifest.version}).encode()
        self.storage.write(tag_key(ref.name, check_part("tag", tag)), body)
        return manifest

    def untag(self, ref: ModelRef) -> None:
        if ref.tag is None:
            raise RegistryError(f"{ref} names a version; untag takes NAME@TAG")
        self.version_of(ref)  # RegistryError if absent
        self.storage.delete(tag_key(ref.name, ref.tag))

    def remove(self, ref: ModelRef) -> Manifest:
        """Delete a version and the blobs no other version uses; refused while a tag points at it."""
        version = self._require_version(ref)
        manifest = self.manifest(ref)
        holding = sorted(t for t, v in self.tags(ref.name).items() if v == version)
        if holding:
            raise RegistryError(f"{ref} is tagged {', '.join(holding)}: move or remove the tag(s) first")
        self.storage.delete(manifest_key(ref.name, version))
        still_used = self._used_blobs()
        for entry in manifest.files:
            if entry.sha256 not in still_used:
                self.storage.delete(blob_key(entry.sha256))
        return manifest

    def verify(self, ref: ModelRef, progress: ProgressFactory = no_progress) -> Manifest:
        """Hash every blob of a version in storage; IntegrityError naming the first bad file."""
        manifest = self.manifest(ref)
        with progress(f"verifying {manifest.name}:{manifest.version}", manifest.total_bytes) as step:
            for entry in manifest.files:
                label = f"{manifest.name}:{manifest.version} file {entry.path}"
                sha256, size = sha256_of(self._blob_chunks(entry.sha256, label), step)
                check(label, sha256, size, entry.sha256, entry.size)
        return manifest

    def pull(self, ref: ModelRef, dest: Path, progress: ProgressFactory = no_progress) -> Manifest:
        """Write a version's files into `dest` (absent or empty), verified, all or nothing."""
        manifest = self.manifest(ref)
        self.pull_manifest(manifest, dest, progress)
        return manifest

    def pull_manifest(self, manifest: Manifest, dest: Path, progress: ProgressFactory = no_progress) -> None:
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise RegistryError(f"{dest} exists and is not an empty directory")
        dest.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        try:
            self.materialize(manifest, scratch, progress)
            scratch.chmod(0o755)
            if dest.exists():
                dest.rmdir()
            os.rename(scratch, dest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def materialize(self, manifest: Manifest, out_dir: Path, progress: ProgressFactory = no_progress) -> None:
        """Copy every file of `manifest` into `out_dir`, hashing while copying."""
        with progress(f"pulling {manifest.name}:{manifest.version}", manifest.total_bytes) as step:
            for entry in manifest.files:
                label = f"{manifest.name}:{manifest.version} file {entry.path}"
                target = out_dir / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    copy_verified(self._blob_chunks(entry.sha256, label), out, entry.sha256, entry.size, label, step)
                target.chmod(0o444)

    def _upload_missing(self, model_dir: Path, manifest: Manifest, progress: ProgressFactory) -> None:
        missing = [f for f in manifest.files if self.storage.size(blob_key(f.sha256)) != f.size]
        if not missing:
            return
        with progress(f"uploading {manifest.name}:{manifest.version}", sum(f.size for f in missing)) as step:
            for entry in missing:
                self._upload(model_dir, entry, step)

    def _upload(self, model_dir: Path, entry: FileEntry, progress: Progress) -> None:
        """Upload one file, hashing it on the way: a file that changed since it was hashed
        must not end up under a digest it does not have."""
        key = blob_key(entry.sha256)
        with open(model_dir / entry.path, "rb") as f:
            reader = HashingReader(f)
            self.storage.upload(key, reader, progress)
        if (reader.hexdigest(), reader.size) != (entry.sha256, entry.size):
            self.storage.delete(key)
            raise IntegrityError(f"{model_dir / entry.path} changed while it was being pushed; push again")

    def _blob_chunks(self, sha256: str, label: str) -> Iterator[bytes]:
        try:
            yield from self.storage.chunks(blob_key(sha256))
        except StorageError as exc:
            raise IntegrityError(f"{label}: blob unreadable ({exc})") from None

    def _used_blobs(self) -> set[str]:
        used = set()
        for key in self.storage.list("manifests/"):
            raw = self.storage.read(key)
            if raw is not None:
                used |= {f.sha256 for f in Manifest.from_json(raw).files}
        return used

    @staticmethod
    def _require_version(ref: ModelRef) -> str:
        if ref.version is None:
            raise RegistryError(f"{ref} names a tag; this needs an explicit version (NAME:VERSION)")
        return ref.version


def _dir_bytes(model_dir: Path) -> int:
    return sum((model_dir / p).stat().st_size for p in model_files(model_dir)) if model_dir.is_dir() else 0
