"""Where a served model's files come from: a registry version (pulled and verified) or a
directory; and how much memory it is estimated to take before it is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kvserve.control.checksum import IntegrityError
from kvserve.control.errors import StorageError
from kvserve.control.manifest import ManifestError
from kvserve.control.ref import ModelRef, RefError, looks_like_ref
from kvserve.control.registry import Registry, RegistryError
from kvserve.control.registry_config import RegistryConfig, RegistryConfigError
from kvserve.control.resolve import resolve
from kvserve.control.storage import open_storage

LOCAL_VERSION = "local"  # what a directory model reports when its spec names no version
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")

# what resolving a reference can fail with; each becomes a SourceError that says why
REGISTRY_ERRORS = (RefError, RegistryError, IntegrityError, ManifestError, StorageError, RegistryConfigError, OSError)


class SourceError(Exception):
    """A model's files cannot be had (unknown version, damaged file, unreadable registry)."""


@dataclass(frozen=True)
class VersionInfo:
    """What is known of a version before loading it."""

    label: str  # NAME:VERSION for a registry version (a tag resolved), else the spec's version or "local"
    weight_bytes: int
    ref: ModelRef | None  # the exact registry version; None for a directory


def is_registry_ref(model: str | None) -> bool:
    return model is not None and not Path(model).exists() and looks_like_ref(model)


def describe_source(model: str | None, registry: str | None, label: str | None = None) -> VersionInfo:
    """Version label and weights' size from the manifest (nothing pulled) or the directory;
    `model` None is the embedded default model."""
    if model is None:
        return VersionInfo(label or LOCAL_VERSION, 0, None)
    if not is_registry_ref(model):
        directory = Path(model)
        if not directory.is_dir():
            raise SourceError(f"{model} is neither a model directory nor a registry reference (NAME:VERSION)")
        return VersionInfo(label or LOCAL_VERSION, _weight_bytes(directory), None)
    try:
        manifest = Registry(open_storage(_registry_config(registry))).manifest(ModelRef.parse(model))
    except REGISTRY_ERRORS as exc:
        raise SourceError(f"cannot load {model} from the registry: {exc}") from None
    exact = ModelRef(manifest.name, version=manifest.version)
    return VersionInfo(str(exact), manifest.total_bytes, exact)


def fetch_source(model: str | None, info: VersionInfo, registry: str | None) -> Path | None:
    """The local directory of the version `info` describes, checksums verified (blocking);
    None for the embedded model."""
    if info.ref is None:
        return None if model is None else Path(model)
    try:
        return resolve(info.ref, _registry_config(registry))
    except REGISTRY_ERRORS as exc:
        raise SourceError(f"cannot load {info.label} from the registry: {exc}") from None


def _registry_config(registry: str | None) -> RegistryConfig:
    return RegistryConfig.load(url=registry)


def _weight_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
