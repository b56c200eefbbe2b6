"""`--model` as a Hugging Face model id (`org/name`): found in the hub's local cache, or
downloaded into it when downloads are allowed, through `huggingface_hub`.

A local directory always wins over an id of the same spelling; the embedded model's
own name (`HuggingFaceTB/SmolLM2-135M-Instruct`) means the embedded model, which needs
no download.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from kvserve.config import EngineConfig
from kvserve.default_model import MODEL_ID as EMBEDDED_MODEL_ID

# What a served checkpoint needs (weights, config, tokenizer, chat template); not the
# PyTorch .bin, GGUF or ONNX copies that many repositories also hold.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]
_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotFoundError(ValueError):
    """--model is neither a directory nor a model id that can be found or downloaded."""


def resolve_model(config: EngineConfig, cache_dir: str | Path | None = None) -> EngineConfig:
    """`config` with `model` a local directory (or None for the embedded model); a model id
    becomes its snapshot directory and, unless one was given, the served name."""
    model = config.model.model
    if model is None or Path(model).expanduser().exists():
        return config
    if model == EMBEDDED_MODEL_ID:
        return replace(config, model=replace(config.model, model=None))
    if not _MODEL_ID.match(model):
        raise ModelNotFoundError(f"model directory {model} does not exist (and it is not a Hugging Face model "
                                 f"id such as {EMBEDDED_MODEL_ID})")
    directory = snapshot_dir(model, cache_dir)
    served = config.model.served_model_name or model
    return replace(config, model=replace(config.model, model=directory, served_model_name=served))


def snapshot_dir(model_id: str, cache_dir: str | Path | None = None) -> str:
    """The local snapshot of `model_id`: the cached one, else a download (with progress bars)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(model_id, cache_dir=cache_dir, local_files_only=True, allow_patterns=ALLOW_PATTERNS)
    except LocalEntryNotFoundError:
        pass
    where = cache_dir or constants.HF_HUB_CACHE
    if constants.HF_HUB_OFFLINE:
        raise ModelNotFoundError(
            f"{model_id} is not in the Hugging Face cache ({where}) and downloads are off (HF_HUB_OFFLINE=1). "
            f"Download it where there is internet (`hf download {model_id}`) and copy the cache folder "
            f"models--{model_id.replace('/', '--')} into {where}, or pass --model DIR"
        ) from None
    return _download(model_id, cache_dir, where)


def _download(model_id: str, cache_dir: str | Path | None, where: str | Path) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    print(f"kvserve: downloading {model_id} into {where}", flush=True)
    try:
        return snapshot_download(model_id, cache_dir=cache_dir, allow_patterns=ALLOW_PATTERNS)
    except RepositoryNotFoundError:
        raise ModelNotFoundError(f"{model_id}: no such model on the Hugging Face Hub (or it is private: "
                                 "set HF_TOKEN)") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise ModelNotFoundError(
            f"{model_id} could not be downloaded into {where} ({type(exc).__name__}: {exc}); with no internet, "
            f"copy the cache folder models--{model_id.replace('/', '--')} there or pass --model DIR"
        ) from None
