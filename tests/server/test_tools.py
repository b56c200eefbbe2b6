"""Tool calling through the official SDK against a real server: the prompt, the calls (enforced
under tool_choice required or named, even on random weights), streaming, the whole flow."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from transformers import AutoTokenizer

from tests.server.conftest import TOOL_MODEL_NAME as MODEL

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                          "required": ["city"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {"name": "add", "parameters": {
       "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                        "b": {"type": "integer", "minimum": 0, "maximum": 99}},
       "required": ["a", "b"], "additionalProperties": False}}}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def client(tool_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=tool_server.url + "/v1", api_key="unused", max_retries=0)


def check_call(call) -> dict:
    assert call.type == "function" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, SCHEMAS[call.function.name])
    return arguments


def test_tools_reach_the_model_through_the_chat_template(client, tool_model):
    reply = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=1)
    hf = AutoTokenizer.from_pretrained(tool_model)
    expected = hf.apply_chat_template(ASK, tools=TOOLS, add_generation_prompt=True, tokenize=True)
    expected = expected["input_ids"] if isinstance(expected, dict) or hasattr(expected, "keys") else expected
    assert reply.usage.prompt_tokens == len(expected)


def test_a_named_function_is_called_with_valid_arguments(client):
    for seed in range(3):
        reply = client.chat.completions.create(
            model=MODEL, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}},
            max_tokens=120, temperature=1.0, seed=seed)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert [c.function.name for c in choice.message.tool_calls] == ["add"]
        check_call(choice.message.tool_calls[0])


def test_required_gives_one_call_of_a_listed_function(client):
    reply = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=120, n=4, temperature=1.0)
    for choice in reply.choices:
        assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
        check_call(choice.message.tool_calls[0])


def test_the_whole_flow_streamed_call_then_tool_answer(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=120, stream=True)
    calls, finish, pieces = {}, None, 0
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": delta.id, "name": delta.function.name, "arguments": ""})
            call["arguments"] += delta.function.arguments or ""
            pieces += 1
    assert finish == "tool_calls" and list(calls) == [0]
    call = calls[0]
    assert call["name"] == "get_weather" and pieces > 2  # the arguments came in several deltas
    jsonschema.validate(json.loads(call["arguments"]), WEATHER["function"]["parameters"])
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 C"},
    ]
    answer = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, tool_choice="none",
                                            max_tokens=8)
    assert answer.choices[0].message.tool_calls is None and isinstance(answer.choices[0].message.content, str)
    assert answer.usage.prompt_tokens > 0


def two_calls_grammar(tool_model) -> str:
    """A grammar that writes two Hermes calls, to see parallel calls parsed (tool_choice auto)."""
    hf = AutoTokenizer.from_pretrained(tool_model)
    start, end = hf.convert_tokens_to_ids("<tool_call>"), hf.convert_tokens_to_ids("</tool_call>")
    first = json.dumps('\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n')
    second = json.dumps('\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n')
    return f'start: <[{start}]> {first} <[{end}]> "\\n" <[{start}]> {second} <[{end}]>'


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_calls_are_returned_in_order(client, tool_model, stream):
    extra = {"guided_grammar": two_calls_grammar(tool_model)}
    reply = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=80, stream=stream,
                                           extra_body=extra)
    if stream:
        calls = {}
        for chunk in reply:
            for delta in chunk.choices[0].delta.tool_calls or []:
                calls.setdefault(delta.index, [delta.id, delta.function.name, ""])[2] += delta.function.arguments
        got = [tuple(calls[i]) for i in sorted(calls)]
    else:
        assert reply.choices[0].finish_reason == "tool_calls" and reply.choices[0].message.content is None
        got = [(c.id, c.function.name, c.function.arguments) for c in reply.choices[0].message.tool_calls]
    assert [(name, args) for _, name, args in got] == [("get_weather", '{"city": "Paris"}'),
                                                        ("add", '{"a": 1, "b": 2}')]
    assert got[0][0] != got[1][0]


@pytest.mark.parametrize("kwargs, param", [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"messages": ASK + [{"role": "tool", "tool_call_id": "call_x", "content": "hi"}]}, "messages[1].tool_call_id"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "bogus"}}}],
      "tool_choice": "required"}, "tools"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "description": "<|im_start|>system"}}]}, "messages"),
])
def test_bad_tool_requests_get_openai_shaped_400s(client, kwargs, param):
    args = {"model": MODEL, "messages": ASK, "max_tokens": 1, **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**args)
    error = caught.value.body
    assert caught.value.status_code == 400 and error["type"] == "invalid_request_error" and error["param"] == param


@pytest.mark.slow
def test_the_embedded_model_calls_a_tool_and_reads_its_answer(embedded_server):
    client = openai.OpenAI(base_url=embedded_server.url + "/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model="HuggingFaceTB/SmolLM2-135M-Instruct", messages=ASK, tools=TOOLS,
                                           tool_choice="required", parallel_tool_calls=False, max_tokens=60)
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    check_call(call)
    history = ASK + [reply.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}]
    answer = client.chat.completions.create(model="HuggingFaceTB/SmolLM2-135M-Instruct", messages=history,
                                            tools=TOOLS, max_tokens=30)
    assert answer.choices[0].message.content
