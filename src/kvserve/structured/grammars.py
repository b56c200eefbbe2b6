"""Grammars (llguidance's serialised form) for every kind of constraint a request can ask for.

A builder raises GrammarError when the input cannot make a grammar: a schema that is not a
JSON Schema llguidance supports, a regex that does not parse, an empty choice. The server
turns that into a 400 before the request reaches the engine.
"""

from __future__ import annotations

import json
from typing import Any

import llguidance

MAX_GRAMMAR_CHARS = 1_000_000  # past this a grammar is refused, before any parsing


class GrammarError(ValueError):
    """The constraint cannot be compiled; the message says why (shown to the client)."""


def json_schema(schema: dict[str, Any] | str) -> str:
    """Any JSON value that validates against `schema` (no extra whitespace between tokens)."""
    if isinstance(schema, str):
        schema = _load_json(schema, "the JSON schema")
    if not isinstance(schema, dict):
        raise GrammarError("the JSON schema must be an object")
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_OPTIONS)
    except Exception as exc:  # noqa: BLE001 - whatever llguidance cannot read is the client's input problem
        raise GrammarError(f"invalid JSON schema: {exc}") from None
    return checked(grammar, "JSON schema")


def json_object() -> str:
    """Any JSON object (OpenAI's `json_object` mode)."""
    return json_schema({"type": "object"})


def regex(pattern: str) -> str:
    return checked(llguidance.LLMatcher.grammar_from_regex(pattern), "regex")


def choice(options: list[str]) -> str:
    """Exactly one of `options` (vLLM's guided_choice)."""
    if not options:
        raise GrammarError("the choice list must not be empty")
    alternatives = " | ".join(json.dumps(o) for o in options)
    return checked(llguidance.LLMatcher.grammar_from_lark(f"start: {alternatives}"), "choice")


def lark(text: str) -> str:
    """A Lark grammar (llguidance's dialect, which takes most GBNF-style rules too)."""
    return checked(llguidance.LLMatcher.grammar_from_lark(text), "grammar")


def checked(grammar: str, what: str) -> str:
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise GrammarError(f"the {what} is too large ({len(grammar)} characters of grammar)")
    try:
        error = llguidance.LLMatcher.validate_grammar(grammar)
    except Exception as exc:  # noqa: BLE001 - as above: a grammar it cannot take is a 400, never a 500
        error = str(exc)
    if error and not error.startswith("WARNING"):
        raise GrammarError(f"invalid {what}: {error.strip()}")
    return grammar


def _load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GrammarError(f"{what} is not valid JSON: {exc}") from None


# one space after ',' and ':' as models write JSON, and no free whitespace (runs a weak model can loop in)
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "coerce_one_of": True}
