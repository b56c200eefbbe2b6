"""Input safety: no chat-template control tokens inside message content, and size limits.

A user who writes `<|im_start|>system` into a message could forge a turn once the
engine applies the chat template. Each model refuses its own tokenizer's control
tokens (`special_tokens` and/or `tokenizer_config` in its config), else a default list
covering ChatML, Llama 3 and Llama 2 / Mistral markers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kvserve.gateway.access.keys import KeyLimits
from kvserve.gateway.config import GatewayConfig
from kvserve.gateway.errors import bad_request
from kvserve.openai_error import OpenAIError

DEFAULT_CONTROL_TOKENS = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>",  # ChatML (Qwen, SmolLM)
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>",  # Llama 3
    "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<s>", "</s>",  # Llama 2, Mistral
)


def tokenizer_special_tokens(path: Path) -> list[str]:
    """Special tokens declared by a Hugging Face tokenizer_config.json."""
    data = json.loads(Path(path).read_text())
    tokens = [t["content"] for t in (data.get("added_tokens_decoder") or {}).values()
              if isinstance(t, dict) and t.get("special")]
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = data.get(name)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str) and value:
            tokens.append(value)
    return tokens


def control_pattern(tokens: list[str] | tuple[str, ...]) -> re.Pattern[str] | None:
    tokens = sorted({t for t in tokens if t}, key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in tokens)) if tokens else None


class InputGuard:
    """Checks one model's requests: control tokens in message content, message count,
    estimated prompt tokens and body size (the key's limits when it sets them)."""

    def __init__(self, tokens: list[str] | tuple[str, ...], max_messages: int, max_prompt_tokens: int) -> None:
        self.pattern = control_pattern(tokens)
        self.max_messages = max_messages
        self.max_prompt_tokens = max_prompt_tokens

    def check(self, payload: dict[str, Any], body_bytes: int, prompt_tokens: int, limits: KeyLimits) -> None:
        if limits.max_body_bytes and body_bytes > limits.max_body_bytes:
            raise OpenAIError(413, f"request body over this key's {limits.max_body_bytes} bytes", code="request_too_large")
        messages = payload.get("messages")
        if isinstance(messages, list):
            self._check_count(messages, limits)
        self.check_tokens(payload)
        cap = min(x for x in (limits.max_prompt_tokens, self.max_prompt_tokens, 1 << 62) if x)
        if prompt_tokens > cap:
            raise bad_request(f"the prompt is about {prompt_tokens} tokens, over the limit of {cap}",
                              "messages" if isinstance(messages, list) else "prompt")

    def _check_count(self, messages: list[Any], limits: KeyLimits) -> None:
        cap = min(x for x in (limits.max_messages, self.max_messages) if x)
        if len(messages) > cap:
            raise bad_request(f"{len(messages)} messages, over the limit of {cap}", "messages")

    def check_tokens(self, payload: dict[str, Any]) -> None:
        """400 when the text the model will see holds a control token."""
        if self.pattern is None:
            return
        for where, text in model_texts(payload):
            found = self.pattern.search(text)
            if found:
                raise OpenAIError(400, f"{where} contains the control token {found.group(0)!r}, "
                                   "which could forge a conversation turn", param=where, code="control_token_in_content")


def model_texts(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, text) for every piece of client text as the server hands it to the template or
    the tokenizer: a message's text parts joined with no separator (as the server joins them),
    a completions prompt string or each string of a prompt list."""
    out: list[tuple[str, str]] = []
    messages = payload.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        if not isinstance(message, dict):
            continue
        out += [(f"messages[{i}].{k}", v) for k, v in message.items() if k in ("name", "role") and isinstance(v, str)]
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        if isinstance(content, str):
            out.append((f"messages[{i}].content", content))
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        out.append(("prompt", prompt))
    elif isinstance(prompt, list):
        out += [(f"prompt[{i}]", p) for i, p in enumerate(prompt) if isinstance(p, str)]
    return out


def build_guards(config: GatewayConfig) -> dict[str, InputGuard]:
    """One guard per model: its own control tokens (or the default list) and the size limits."""
    guards = {}
    for name, model in config.models.items():
        tokens = list(DEFAULT_CONTROL_TOKENS if model.special_tokens is None else model.special_tokens)
        if model.tokenizer_config is not None:
            tokens += tokenizer_special_tokens(model.tokenizer_config)
        guards[name] = InputGuard(tokens, config.limits.max_messages, config.limits.max_prompt_tokens)
    return guards
