"""The manifest of a model version: what it is and every file it holds, with checksums.

A manifest is the whole identity of a version: its files are stored by SHA-256, so two
versions that share a file share its blob, and a reader that trusts the manifest can
verify every byte it loads.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from kvserve.control.checksum import Progress, file_chunks, sha256_of
from kvserve.control.ref import check_part

SCHEMA = 1
_SAFETENSORS_HEADER_MAX = 100 << 20  # a larger header is not a safetensors file we wrote or trust
_HEX = set("0123456789abcdef")


class ManifestError(ValueError):
    """A manifest or a model directory that cannot be described by one."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a version: its path inside the model directory, size and digest."""

    path: str  # relative, '/'-separated, never absolute and never '..'
    size: int  # bytes
    sha256: str  # hex digest; the blob's key in the registry

    def __post_init__(self) -> None:
        check_relative_path(self.path)
        if not isinstance(self.size, int) or self.size < 0:
            raise ManifestError(f"file {self.path}: size must be a non-negative integer")
        if not (isinstance(self.sha256, str) and len(self.sha256) == 64 and set(self.sha256) <= _HEX):
            raise ManifestError(f"file {self.path}: sha256 must be 64 lowercase hex digits")


@dataclass(frozen=True)
class Manifest:
    """An immutable model version."""

    name: str
    version: str
    architecture: str | None  # first of config.json's `architectures`
    dtype: str | None  # the checkpoint's stored dtype (config.json), e.g. bfloat16
    parameter_count: int  # elements over all safetensors tensors
    files: tuple[FileEntry, ...]
    tokenizer: bool  # tokenizer.json present
    chat_template: bool  # a chat template present (tokenizer_config.json or chat_template.jinja)
    source: str  # where it was pushed from (a path or URL, as the pusher gave it)
    created: str  # ISO 8601, UTC
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_part("model name", self.name)
        check_part("version", self.version)
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ManifestError(f"{self.name}:{self.version}: a file is listed twice")
        for key, value in self.labels.items():
            check_part("label name", key)
            if not isinstance(value, str) or len(value) > 256:
                raise ManifestError(f"label {key}: value must be a string of at most 256 characters")

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        data = {"schema": SCHEMA, **asdict(self)}
        return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"

    def digest(self) -> str:
        """SHA-256 of the manifest's bytes: tells apart two pushes of the same name:version."""
        return hashlib.sha256(self.to_json()).hexdigest()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
            if data.pop("schema", None) != SCHEMA:
                raise ManifestError(f"unknown manifest schema (this kvserve reads schema {SCHEMA})")
            data["files"] = tuple(FileEntry(**f) for f in data["files"])
            return cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ManifestError(f"malformed manifest: {exc}") from None


def describe(model_dir: Path, name: str, version: str, source: str, labels: dict[str, str] | None = None,
             progress: Progress | None = None) -> Manifest:
    """The manifest of a model directory; hashes every file (streaming, `progress` per chunk)."""
    if not model_dir.is_dir():
        raise ManifestError(f"{model_dir} is not a directory")
    paths = model_files(model_dir)
    if not paths:
        raise ManifestError(f"{model_dir} holds no files")
    files = tuple(_entry(model_dir, p, progress) for p in paths)
    config = _read_json(model_dir / "config.json")
    return Manifest(
        name=name, version=version,
        architecture=(config.get("architectures") or [None])[0],
        dtype=config.get("torch_dtype") or config.get("dtype"),
        parameter_count=sum(_safetensors_elements(model_dir / p) for p in paths if p.endswith(".safetensors")),
        files=files,
        tokenizer=(model_dir / "tokenizer.json").is_file(),
        chat_template=_has_chat_template(model_dir),
        source=source,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        labels=dict(labels or {}),
    )


def model_files(model_dir: Path) -> list[str]:
    """Every file under `model_dir`, relative and sorted; hidden entries (.git, .cache,
    editor files) are not part of a model. Symbolic links to files count as the files
    (a Hugging Face cache snapshot is made of them)."""
    found = []
    for path in sorted(model_dir.rglob("*")):
        rel = path.relative_to(model_dir)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        found.append(rel.as_posix())
    return found


def check_relative_path(path: str) -> str:
    """`path` if it stays inside a model directory once joined to it."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or any(part in ("", ".", "..") for part in path.split("/")) or "\\" in path:
        raise ManifestError(f"unsafe file path in manifest: {path!r}")
    return path


def _entry(model_dir: Path, rel: str, progress: Progress | None) -> FileEntry:
    sha256, size = sha256_of(file_chunks(model_dir / rel), progress)
    return FileEntry(rel, size, sha256)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    return bool(_read_json(model_dir / "tokenizer_config.json").get("chat_template"))


def _safetensors_elements(path: Path) -> int:
    """Elements of every tensor in a safetensors file, from its JSON header alone."""
    with open(path, "rb") as f:
        head = f.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < length <= _SAFETENSORS_HEADER_MAX:
            raise ManifestError(f"{path.name} is not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(length))
        except ValueError:
            raise ManifestError(f"{path.name} is not a safetensors file (bad header)") from None
    return sum(math.prod(t["shape"]) for key, t in header.items() if key != "__metadata__")
