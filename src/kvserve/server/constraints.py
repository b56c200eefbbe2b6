"""A request's output constraint (response_format, structured_outputs, guided_*) as a grammar.

A constraint that cannot compile becomes a 400 naming the field, before the engine sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvserve.openai_error import OpenAIError
from kvserve.server.errors import bad_request
from kvserve.server.protocol import ResponseFormat, SamplingFields, StructuredOutputsField
from kvserve.structured import grammars
from kvserve.structured.grammars import GrammarError


def requested_grammar(body: SamplingFields) -> str | None:
    """The grammar of the one constraint the body gives (protocol checks there is at most one)."""
    for name, build in _BUILDERS.items():
        value = getattr(body, name)
        if value is None:
            continue
        try:
            grammar = build(value)
        except GrammarError as exc:
            raise _invalid(name, exc) from None
        if grammar is not None:
            return grammar
    return None


def _response_format(value: ResponseFormat) -> str | None:
    if value.type == "text":
        return None
    if value.type == "json_object" or value.json_schema.schema_ is None:
        return grammars.json_object()
    return grammars.json_schema(value.json_schema.schema_)


def _structured_outputs(value: StructuredOutputsField) -> str:
    if value.json_ is not None:
        return grammars.json_schema(value.json_)
    if value.regex is not None:
        return grammars.regex(value.regex)
    if value.choice is not None:
        return grammars.choice(value.choice)
    if value.grammar is not None:
        return grammars.lark(value.grammar)
    return grammars.json_object()


_BUILDERS: dict[str, Callable[[Any], str | None]] = {
    "response_format": _response_format,
    "structured_outputs": _structured_outputs,
    "guided_json": grammars.json_schema,
    "guided_regex": grammars.regex,
    "guided_choice": grammars.choice,
    "guided_grammar": grammars.lark,
}


def _invalid(name: str, exc: GrammarError) -> OpenAIError:
    return bad_request(str(exc), param=name, code="invalid_value")
