"""Tokenizer loading and chat templating, on top of transformers' AutoTokenizer (offline)."""

from __future__ import annotations

import re
import uuid
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


def apply_chat_template(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = True,
                        **template_kwargs: Any) -> list[int]:
    """Token ids of `messages` rendered through the tokenizer's chat template; `template_kwargs`
    (tools=..., enable_thinking=...) are the template's other variables."""
    _check_chat_template(tokenizer)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True,
                                        **template_kwargs)
    return _as_id_list(ids)


def render_chat_template(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = True,
                         **template_kwargs: Any) -> str:
    """The text of `messages` rendered through the tokenizer's chat template."""
    _check_chat_template(tokenizer)
    return str(tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False,
                                             **template_kwargs))


def _check_chat_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise TokenizerError(
            f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
            "use the completions API with a plain prompt, or a model whose tokenizer_config.json "
            "or chat_template.jinja has one"
        )


def _as_id_list(ids: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding (a Mapping); 4.x returned a plain list.
    if isinstance(ids, Mapping):
        ids = ids["input_ids"]
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):  # a batch of one
        ids = ids[0]
    return [int(i) for i in ids]


class ClientTextEncoder:
    """Tokenizes what clients send so that their text never becomes a control token.

    A special token's string inside a chat message or a prompt (`<|im_start|>`,
    `<|eot_id|>`) is tokenized as the plain text it is, while the chat template's own
    markup still gives the special ids. Text that holds no special token's string is
    tokenized by the tokenizer's normal path, so its ids are exactly what they would be
    without this class; such requests pay one regex scan of their text.
    `allow_special_in_text=True` turns the guard off (client text is parsed as is).
    """

    def __init__(self, tokenizer: Any, allow_special_in_text: bool = False) -> None:
        self.tokenizer = tokenizer
        self._specials = None if allow_special_in_text else _special_strings(tokenizer)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Ids of a prompt; `add_special_tokens` adds the tokenizer's BOS and the like."""
        inert = self.holds_special(text)
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens, split_special_tokens=inert))

    def chat(self, messages: list[dict], add_generation_prompt: bool = True, **template_kwargs: Any) -> list[int]:
        """Ids of `messages` (each content a string) rendered through the chat template."""
        if not any(self.holds_special(m["content"]) for m in messages):
            return apply_chat_template(self.tokenizer, messages, add_generation_prompt, **template_kwargs)
        return self._chat_with_inert_contents(messages, add_generation_prompt, template_kwargs)

    def holds_special(self, text: str) -> bool:
        return self._specials is not None and self._specials.search(text) is not None

    def _chat_with_inert_contents(self, messages: list[dict], add_generation_prompt: bool,
                                  template_kwargs: dict[str, Any]) -> list[int]:
        """The template rendered around one unguessable mark per content, then the template's
        text tokenized with special tokens and each content without (a template that trims
        its contents sees only the marks, so contents go in as sent)."""
        nonce = uuid.uuid4().hex
        marked = [{**m, "content": f"\ue000{nonce}:{i}\ue001"} for i, m in enumerate(messages)]
        text = render_chat_template(self.tokenizer, marked, add_generation_prompt, **template_kwargs)
        ids: list[int] = []
        for n, piece in enumerate(re.split(f"\ue000{nonce}:(\\d+)\ue001", text)):
            if n % 2:  # the index captured from a mark
                content = messages[int(piece)]["content"]
                ids += self.tokenizer.encode(content, add_special_tokens=False, split_special_tokens=True)
            elif piece:
                ids += self.tokenizer.encode(piece, add_special_tokens=False, split_special_tokens=False)
        return [int(i) for i in ids]


def _special_strings(tokenizer: Any) -> re.Pattern[str] | None:
    """A pattern that finds any special token's string (longest first), None if it has none."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    strings = sorted({t.content for t in added.values() if t.special and t.content}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, strings))) if strings else None
