"""From a model reference to a verified local directory: what `--model NAME:VERSION` loads.

Pulled versions are kept under RegistryConfig.pulled_dir(), one directory per manifest
digest (a version removed and pushed again with other bytes gets a new directory).
Every resolve hashes the cached files against the manifest before handing the directory
out, so a file damaged on disk is noticed at load time, named, and fetched again.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

from kvserve.config import ConfigError, EngineConfig
from kvserve.control.checksum import IntegrityError, ProgressFactory, check, file_chunks, no_progress, sha256_of
from kvserve.control.manifest import Manifest, ManifestError
from kvserve.control.ref import ModelRef, RefError, looks_like_ref
from kvserve.control.registry import Registry, RegistryError
from kvserve.control.registry_config import RegistryConfig, RegistryConfigError
from kvserve.control.errors import StorageError
from kvserve.control.storage import open_storage

logger = logging.getLogger(__name__)


def resolve(ref: str | ModelRef, config: RegistryConfig | None = None, progress: ProgressFactory = no_progress) -> Path:
    """The local directory of the version `ref` names (NAME:VERSION or NAME@TAG), verified.

    Raises IntegrityError (naming the file) when the registry's copy is damaged,
    RegistryError when the version or tag does not exist.
    """
    config = config or RegistryConfig.load()
    ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
    registry = Registry(open_storage(config))
    manifest = registry.manifest(ref)
    target = config.pulled_dir() / manifest.name / f"{manifest.version}-{manifest.digest()[:12]}"
    if target.is_dir() and _cached_copy_ok(target, manifest, progress):
        return target
    try:
        registry.pull_manifest(manifest, target, progress)
    except (RegistryError, OSError):
        # Another process pulled the same version meanwhile: use its copy if it verifies.
        if not (target.is_dir() and _cached_copy_ok(target, manifest, progress)):
            raise
    return target


def verify_dir(model_dir: Path, manifest: Manifest, progress: ProgressFactory = no_progress) -> None:
    """Hash every file of `manifest` in `model_dir`; IntegrityError naming the first bad one."""
    with progress(f"verifying {manifest.name}:{manifest.version}", manifest.total_bytes) as step:
        for entry in manifest.files:
            label = f"{manifest.name}:{manifest.version} file {entry.path}"
            path = model_dir / entry.path
            if not path.is_file():
                raise IntegrityError(f"{label}: missing from {model_dir}")
            sha256, size = sha256_of(file_chunks(path), step)
            check(label, sha256, size, entry.sha256, entry.size)


def with_registry_model(config: EngineConfig, registry: RegistryConfig | None = None) -> EngineConfig:
    """`config` with a `model` that names a registry version replaced by its verified local
    directory (the API still answers to the reference); existing paths and no model pass
    through unchanged. ConfigError says why a reference cannot be loaded."""
    model = config.model.model
    if not model or Path(model).exists() or not looks_like_ref(model):
        return config
    try:
        directory = resolve(model, registry)
    except (RefError, RegistryError, IntegrityError, ManifestError, StorageError, RegistryConfigError, OSError) as exc:
        raise ConfigError(f"cannot load model {model} from the registry: {exc}") from None
    served = config.model.served_model_name or model
    return replace(config, model=replace(config.model, model=str(directory), served_model_name=served))


def _cached_copy_ok(target: Path, manifest: Manifest, progress: ProgressFactory) -> bool:
    try:
        verify_dir(target, manifest, progress)
        return True
    except IntegrityError as exc:
        logger.warning("cached copy failed verification (%s); fetching it again from the registry", exc)
        shutil.rmtree(target, ignore_errors=True)
        return False
