"""SHA-256 computed while bytes stream past, so that verifying costs no second read."""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager, contextmanager
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1 << 20  # 1 MiB reads: large enough for hashlib's speed, small in memory

Progress = Callable[[int], None]  # called with the number of bytes just handled


class IntegrityError(ValueError):
    """A file's bytes do not match its manifest entry; the message names the file."""


def file_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            yield chunk


def sha256_of(chunks: Iterable[bytes], progress: Progress | None = None) -> tuple[str, int]:
    """(hex digest, byte count) of a stream of chunks."""
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        if progress:
            progress(len(chunk))
    return digest.hexdigest(), size


def copy_verified(chunks: Iterable[bytes], out: BinaryIO, expected_sha256: str, expected_size: int,
                  label: str, progress: Progress | None = None) -> None:
    """Write the chunks to `out`, hashing them on the way; IntegrityError naming `label`
    when the size or the digest differs from the manifest's."""
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        size += len(chunk)
        if size > expected_size:
            raise IntegrityError(f"{label}: larger than the {expected_size} bytes of its manifest entry")
        digest.update(chunk)
        out.write(chunk)
        if progress:
            progress(len(chunk))
    check(label, digest.hexdigest(), size, expected_sha256, expected_size)


class HashingReader:
    """A read-only, forward-only file wrapper that hashes what is read through it, so an
    upload and its verification share one read. It offers no seek(), which also keeps
    boto3's transfer reading it in order."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw, self._digest, self.size = raw, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        chunk = self._raw.read(n)
        self._digest.update(chunk)
        self.size += len(chunk)
        return chunk

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def check(label: str, sha256: str, size: int, expected_sha256: str, expected_size: int) -> None:
    if size != expected_size:
        raise IntegrityError(f"{label}: truncated or wrong size ({size} bytes, manifest says {expected_size})")
    if sha256 != expected_sha256:
        raise IntegrityError(f"{label}: corrupted (sha256 {sha256[:16]}…, manifest says {expected_sha256[:16]}…)")


# (description, total bytes) -> a context that yields the Progress callback of one bar;
# the CLI passes tqdm bars, library callers nothing.
ProgressFactory = Callable[[str, int], AbstractContextManager[Progress]]


@contextmanager
def no_progress(_description: str, _total: int) -> Iterator[Progress]:
    yield lambda _n: None
