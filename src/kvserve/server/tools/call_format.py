"""How a model family writes tool calls, and the grammar that makes it write one.

Both families we serve write each call as a JSON object `{"name": ..., "<args key>": {...}}`:
Hermes (Qwen2.5, Qwen3) wraps each in `<tool_call>`…`</tool_call>` after any text;
Llama 3.1 writes the objects alone, at the start of its answer, separated by `;`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

from kvserve.structured import grammars

MAX_PARALLEL_CALLS = 8  # calls one answer may hold under tool_choice "required"
# generated JSON: one space after ',' and ':', no free whitespace (see structured.grammars)
_COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class CallFormat:
    name: str
    open: str | None  # before each call; None = calls only at the start of the answer
    close: str | None  # after each call
    args_key: str  # "arguments" (Hermes) or "parameters" (Llama 3.1)
    separator: str  # between calls, in the grammar
    lead: tuple[str, ...] = ()  # markers that may come first and are not text (Llama's <|python_tag|>)

    def grammar(self, tools: list[dict[str, Any]], parallel: bool, token_ids: Mapping[str, int]) -> str:
        """Lark for one call (or up to MAX_PARALLEL_CALLS) of the given functions
        (`{"name", "parameters"}` each) and nothing else. `token_ids`: markers that are one
        token in this model's vocabulary (Qwen's `<tool_call>`), written as that token."""
        rules = [f"start: call (sep call){{0,{MAX_PARALLEL_CALLS - 1}}}" if parallel else "start: call",
                 f"sep: {json.dumps(self.separator)}",
                 "call: " + " | ".join(f"call_{i}" for i in range(len(tools)))]
        open_, close = _marker(self.open, "", "\n", token_ids), _marker(self.close, "\n", "", token_ids)
        for i, tool in enumerate(tools):
            head = json.dumps(f'{{"name": "{tool["name"]}", "{self.args_key}": ')
            rules.append(f'call_{i}: {open_} {head} args_{i} "}}" {close}')
            rules.append(f"args_{i}: %json {json.dumps(_object_schema(tool.get('parameters')))}")
        return grammars.lark("\n".join(rules))

    def markers(self) -> list[str]:
        return [m for m in (self.open, self.close) if m]


def _marker(marker: str | None, before: str, after: str, token_ids: Mapping[str, int]) -> str:
    """The lark for a marker with its line breaks (a one-token marker as that token: llguidance
    treats added tokens as special, never as their text)."""
    if marker is None:
        return '""'
    text = f"<[{token_ids[marker]}]>" if marker in token_ids else json.dumps(marker)
    return " ".join(filter(None, [before and json.dumps(before), text, after and json.dumps(after)]))


def _object_schema(parameters: dict[str, Any] | None) -> dict[str, Any]:
    schema = dict(parameters) if parameters else {"type": "object"}
    schema["x-guidance"] = {**_COMPACT, **schema.get("x-guidance", {})}
    return schema


HERMES = CallFormat("hermes", "<tool_call>", "</tool_call>", "arguments", "\n")
LLAMA3_JSON = CallFormat("llama3_json", None, None, "parameters", "; ", lead=("<|python_tag|>",))
