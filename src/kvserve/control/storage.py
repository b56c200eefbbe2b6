"""Where a registry keeps its bytes: one small interface, implementations picked by URL.

Keys are '/'-separated paths built by the registry from validated names; a storage
never interprets them. Two writes the registry's consistency rests on:
`write(..., exclusive=True)` creates a key only if it is absent (atomically, so that
of two racing pushes of one version exactly one wins), and `upload` makes a whole
object appear at once (a reader never sees half a blob under its final key).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from kvserve.control.checksum import CHUNK_BYTES, Progress, file_chunks
from kvserve.control.errors import StorageError
from kvserve.control.registry_config import RegistryConfig


class Storage(Protocol):
    def read(self, key: str) -> bytes | None:
        """A small object's bytes, or None when the key is absent."""

    def write(self, key: str, data: bytes, exclusive: bool = False) -> bool:
        """Store `data` at `key`; with `exclusive`, only if absent (returns False if present)."""

    def upload(self, key: str, stream: BinaryIO, progress: Progress | None = None) -> None:
        """Store the bytes read from `stream` up to its end at `key` (replacing whatever was
        there), reading it once, in order."""

    def chunks(self, key: str) -> Iterator[bytes]:
        """An object's bytes as a stream; StorageError when absent."""

    def size(self, key: str) -> int | None:
        """An object's size in bytes, or None when absent."""

    def list(self, prefix: str) -> list[str]:
        """Every key that starts with `prefix`, sorted."""

    def delete(self, key: str) -> None:
        """Remove `key` (absent keys are fine)."""

    def describe(self) -> str:
        """Where the storage is, for messages."""


class LocalStorage:
    """A directory tree; each key is a file under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_config(cls, config: RegistryConfig) -> LocalStorage:
        return cls(config.local_root())

    def describe(self) -> str:
        return str(self.root)

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, key: str, data: bytes, exclusive: bool = False) -> bool:
        return self._publish(key, lambda out: out.write(data), exclusive)

    def upload(self, key: str, stream: BinaryIO, progress: Progress | None = None) -> None:
        def copy(out) -> None:
            while chunk := stream.read(CHUNK_BYTES):
                out.write(chunk)
                if progress:
                    progress(len(chunk))

        self._publish(key, copy, exclusive=False)

    def chunks(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise StorageError(f"{key} is missing from {self.root}")
        return file_chunks(path)

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix.rstrip("/") if prefix.endswith("/") else self._path(prefix).parent
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith("."))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or key.startswith("/"):
            raise StorageError(f"invalid storage key {key!r}")
        return self.root.joinpath(*parts)

    def _publish(self, key: str, fill: Callable, exclusive: bool) -> bool:
        """Write into a hidden temporary file beside the key, then make it appear at once:
        os.link fails if the key exists (exclusive), os.replace swaps atomically."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o444)  # stored objects are immutable
            if not exclusive:
                os.replace(tmp, path)
                return True
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)


def _s3_storage(config: RegistryConfig) -> Storage:
    try:
        from kvserve.control.s3_storage import S3Storage  # boto3 is an optional extra
    except ImportError as exc:
        raise StorageError(f"an s3:// registry needs boto3 ({exc}): pip install 'kvserve[registry]'") from None
    return S3Storage.from_config(config)


# scheme of RegistryConfig.url -> factory
STORAGES: dict[str, Callable[[RegistryConfig], Storage]] = {
    "local": LocalStorage.from_config,
    "s3": _s3_storage,
}


def open_storage(config: RegistryConfig) -> Storage:
    return STORAGES[config.scheme()](config)

