"""Tokenizer loading and chat templating, on top of transformers' AutoTokenizer (offline)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


class TokenizerError(ValueError):
    """The tokenizer cannot be loaded or cannot do what was asked; the message says why."""


def load_tokenizer(path: str | Path) -> Any:
    """The fast tokenizer saved in the model directory `path` (tokenizer.json and friends)."""
    path = Path(path)
    if not path.is_dir():
        raise TokenizerError(f"tokenizer directory {path} does not exist or is not a directory")
    from transformers import AutoTokenizer

    try:
        # local_files_only: a directory without tokenizer files must fail here, not hit the hub.
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise TokenizerError(f"cannot load a tokenizer from {path}: {err}") from err


def apply_chat_template(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of `messages` rendered through the tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise TokenizerError(
            f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
            "use the completions API with a plain prompt, or a model whose tokenizer_config.json "
            "or chat_template.jinja has one"
        )
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return _as_id_list(ids)


def _as_id_list(ids: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding (a Mapping); 4.x returned a plain list.
    if isinstance(ids, Mapping):
        ids = ids["input_ids"]
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):  # a batch of one
        ids = ids[0]
    return [int(i) for i in ids]
