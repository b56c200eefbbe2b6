"""Moving a registry tag when a rollout promotes its version."""

from __future__ import annotations

from kvserve.control.ref import ModelRef
from kvserve.control.registry import Registry
from kvserve.control.registry_config import RegistryConfig
from kvserve.control.storage import open_storage


def move_tag(config: RegistryConfig, ref: str, tag: str) -> None:
    """Point NAME@`tag` at `ref` (NAME:VERSION). Blocking I/O (a directory or S3): run it in a thread.
    Raises RegistryError when the version is not in the registry, StorageError or OSError."""
    Registry(open_storage(config)).tag(ModelRef.parse(ref), tag)
