"""Tool calls and reasoning read out of model text: whole, and piece by piece as it streams."""

from __future__ import annotations

import json

import pytest

from kvserve.server.chat_output import ChatOutput, split_answer
from kvserve.server.reasoning import REASONING_PARSERS
from kvserve.server.tools import CALL_FORMATS, pick_format
from kvserve.server.tools.call_format import HERMES, LLAMA3_JSON
from kvserve.server.tools.stream import ToolCallStream, parse_calls
from kvserve.structured.grammars import GrammarError

HERMES_TEXT = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris \\"}{\\"", '
               '"days": [1, {"n": 2}]}}\n</tool_call>\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>')
LLAMA_TEXT = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Rome"}}; {"name": "now", "parameters": {}}'


def streamed(fmt, text: str, size: int) -> tuple[str, dict[int, dict]]:
    """Content and calls (id, name, arguments joined from the deltas) fed `size` characters at a time."""
    stream, content, calls = ToolCallStream(fmt), "", {}
    pieces = [stream.feed(text[i:i + size]) for i in range(0, len(text), size)] + [stream.finish()]
    for parts in pieces:
        content += parts.content
        for delta in parts.calls:
            call = calls.setdefault(delta.index, {"id": delta.id, "name": delta.name, "arguments": ""})
            assert delta.id is None or delta.id == call["id"]
            call["arguments"] += delta.arguments
    return content, calls


def test_hermes_calls_with_text_before_them():
    content, calls = parse_calls(HERMES, HERMES_TEXT)
    assert content.strip() == "Let me check."
    assert [c.name for c in calls] == ["get_weather", "now"]
    assert json.loads(calls[0].arguments) == {"city": 'Paris "}{"', "days": [1, {"n": 2}]}
    assert calls[1].arguments == "{}" and calls[0].id != calls[1].id


def test_llama3_json_calls_separated_by_semicolons():
    content, calls = parse_calls(LLAMA3_JSON, LLAMA_TEXT)
    assert content == ""
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Rome"}), ("now", {})]


def test_text_that_is_not_a_call_stays_content():
    assert parse_calls(HERMES, "a < b and <tool") == ("a < b and <tool", [])
    assert parse_calls(LLAMA3_JSON, "Hello {there}") == ("Hello {there}", [])


@pytest.mark.parametrize("fmt, text", [(HERMES, HERMES_TEXT), (LLAMA3_JSON, LLAMA_TEXT)])
@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_streamed_deltas_add_up_to_the_whole_answer(fmt, text, size):
    whole_content, whole_calls = parse_calls(fmt, text)
    content, calls = streamed(fmt, text, size)
    assert content == whole_content
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [(c.name, c.arguments) for c in whole_calls]


def test_an_unfinished_call_is_not_returned():
    assert parse_calls(HERMES, '<tool_call>\n{"name": "f", "arguments": {"a": ')[1] == []


def test_the_call_grammar_names_one_token_markers_by_id_and_refuses_bad_parameters():
    tools = [{"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}]
    assert "<[42]>" in HERMES.grammar(tools, False, {"<tool_call>": 42})
    assert '"<tool_call>"' in HERMES.grammar(tools, False, {})
    with pytest.raises(GrammarError):
        HERMES.grammar([{"name": "f", "parameters": {"type": "nonsense"}}], False, {})


def test_formats_are_picked_by_name_or_by_the_chat_template():
    assert pick_format("llama3_json", None) is LLAMA3_JSON
    assert pick_format(None, "... <|start_header_id|> ...") is LLAMA3_JSON
    assert pick_format(None, "... <tool_call> ...") is HERMES
    assert pick_format(None, None) is HERMES
    assert set(CALL_FORMATS) == {"hermes", "llama3_json"}


QWEN3 = REASONING_PARSERS["qwen3"]


@pytest.mark.parametrize("text, reasoning, content", [
    ("<think>\nfirst, think\n</think>\n\nThe answer.", "first, think", "The answer."),
    ("thinking without the opening tag</think>answer", "thinking without the opening tag", "answer"),
    ("<think>cut off before the end", "cut off before the end", None),
])
def test_reasoning_is_split_off_the_answer(text, reasoning, content):
    answer = split_answer(text, QWEN3, None)
    assert (answer.reasoning, answer.content) == (reasoning, content)


def test_reasoning_then_tool_calls_streamed_one_character_at_a_time():
    text = "<think>I need the weather.</think>\n\n" + HERMES_TEXT
    output, reasoning, content, names = ChatOutput(QWEN3, HERMES), "", "", []
    for parts in [output.feed(ch) for ch in text] + [output.finish()]:
        reasoning += parts.reasoning
        content += parts.content
        names += [c.name for c in parts.calls if c.name]
    assert reasoning == "I need the weather."
    assert content.strip() == "Let me check."
    assert names == ["get_weather", "now"] and len(output.calls) == 2


def test_without_parsers_the_text_is_the_answer_unchanged():
    assert split_answer("  as is \n", None, None).content == "  as is \n"
