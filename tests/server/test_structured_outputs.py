"""Structured outputs through the official SDK against a real server: response_format,
vLLM's structured_outputs and guided_* fields, on chat and completions; bad constraints 400."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Annotated

import jsonschema
import openai
import pytest
from pydantic import BaseModel, ConfigDict, Field

from tests.server.conftest import MODEL_NAME
from tests.server.conftest import TOOL_MODEL_NAME as MODEL

ASK = [{"role": "user", "content": "Describe a city."}]


@pytest.fixture(scope="module")
def client(tool_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=tool_server.url + "/v1", api_key="unused", max_retries=0)


class City(BaseModel):
    model_config = ConfigDict(extra="forbid")  # additionalProperties: false, as strict schemas have

    name: str = Field(max_length=16)
    population: int = Field(ge=0, le=10_000_000)
    landmarks: list[Annotated[str, Field(max_length=12)]] = Field(max_length=2)
    capital: bool


def test_parse_with_a_pydantic_model(client):
    reply = client.chat.completions.parse(model=MODEL, messages=ASK, response_format=City, max_tokens=300,
                                          temperature=1.0, seed=7)
    city = reply.choices[0].message.parsed
    assert isinstance(city, City) and reply.choices[0].finish_reason == "stop"


def test_json_object_mode_gives_an_object_for_every_choice(client):
    reply = client.chat.completions.create(model=MODEL, messages=ASK, response_format={"type": "json_object"},
                                           max_tokens=200, n=3, temperature=1.0)
    for choice in reply.choices:
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)


def test_a_streamed_schema_answer_adds_up_to_valid_json(client):
    schema = City.model_json_schema()
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=300, stream=True, temperature=1.0, seed=3,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    City.model_validate_json(text)


@pytest.mark.parametrize("extra, check", [
    ({"guided_choice": ["red", "green", "blue"]}, lambda t: t in ("red", "green", "blue")),
    ({"guided_regex": r"[A-Z]{2}-\d{3}"}, lambda t: len(t) == 6 and t[:2].isupper() and t[3:].isdigit()),
    ({"structured_outputs": {"choice": ["yes", "no"]}}, lambda t: t in ("yes", "no")),
    ({"structured_outputs": {"grammar": 'start: "a" "b"+ "c"'}}, lambda t: t[0] == "a" and t[-1] == "c"),
    ({"guided_json": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}},
     lambda t: isinstance(json.loads(t), list)),
])
def test_vllm_fields_constrain_chat_answers(client, extra, check):
    reply = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=40, temperature=1.0, seed=1,
                                           extra_body=extra)
    assert reply.choices[0].finish_reason == "stop" and check(reply.choices[0].message.content)


def test_completions_take_constraints_too(client):
    reply = client.completions.create(model=MODEL, prompt="The answer is", max_tokens=20,
                                      extra_body={"structured_outputs": {"regex": r"\d{4}"}})
    assert len(reply.choices[0].text) == 4 and reply.choices[0].text.isdigit()
    reply = client.completions.create(model=MODEL, prompt="JSON:", max_tokens=100, extra_body={
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
            "additionalProperties": False}}}})
    assert json.loads(reply.choices[0].text) in ({"ok": True}, {"ok": False})


@pytest.mark.parametrize("extra, param", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}},
     "response_format"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    ({"guided_regex": "(unclosed"}, "guided_regex"),
    ({"guided_json": "{not json"}, "guided_json"),
    ({"guided_grammar": "start: missing_rule"}, "guided_grammar"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice"),
    ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
])
def test_bad_constraints_get_openai_shaped_400s(client, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, extra_body=extra)
    assert caught.value.body["type"] == "invalid_request_error" and caught.value.body["param"] == param


# -- the embedded model: many schemas, every answer valid -----------------------------

PROMPTS = ["Describe a person.", "Give me data about a product.", "Write a record for a book.",
           "Fill in the form for a trip."]


def make_schemas(count: int, seed: int = 0) -> list[dict]:
    """Varied schemas: nested objects, arrays, enums, bounded numbers, optional fields."""
    rng = random.Random(seed)
    leaves = [
        lambda: {"type": "string", "maxLength": rng.choice([8, 16, 24])},
        lambda: {"type": "integer", "minimum": rng.randint(-50, 0), "maximum": rng.randint(1, 500)},
        lambda: {"type": "number", "minimum": 0, "maximum": rng.choice([1, 10, 1000])},
        lambda: {"type": "boolean"},
        lambda: {"enum": rng.sample(["red", "green", "blue", "small", "large", "none"], 3)},
        lambda: {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 3},
        lambda: {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 1, "maxItems": 2},
    ]

    def obj(depth: int) -> dict:
        names = rng.sample(["id", "name", "age", "size", "color", "tags", "score", "ok", "price", "city"],
                           rng.randint(2, 4))
        props = {n: (obj(depth + 1) if depth < 2 and rng.random() < 0.3 else rng.choice(leaves)()) for n in names}
        required = [n for n in names if rng.random() < 0.7]
        return {"type": "object", "properties": props, "required": required, "additionalProperties": False}

    return [obj(0) for _ in range(count)]


@pytest.mark.perf  # minutes of CPU at batch 200: run with -m perf on a quiet machine (docs/server.md)
@pytest.mark.timeout(3600)
def test_the_embedded_model_answers_50_schemas_validly(embedded_server):
    client = openai.AsyncOpenAI(base_url=embedded_server.url + "/v1", api_key="unused", max_retries=0,
                                timeout=3000)
    schemas = make_schemas(50)

    async def ask(schema: dict, prompt: str) -> tuple[dict, str, str]:
        reply = await client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": prompt}], max_tokens=200, response_format={
                "type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}})
        return schema, reply.choices[0].message.content, reply.choices[0].finish_reason

    async def ask_all() -> list[tuple[dict, str, str]]:
        return await asyncio.gather(*(ask(s, p) for s in schemas for p in PROMPTS))

    results = asyncio.run(ask_all())
    assert len(results) == 200
    for schema, text, finish in results:
        assert finish == "stop", text
        jsonschema.validate(json.loads(text), schema)
