"""Qwen3 reasoning with --reasoning-parser qwen3: <think>…</think> comes back as
reasoning_content (whole and streamed), a schema holds for the answer after it, and
enable_thinking=false (chat_template_kwargs) turns thinking off."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from transformers import AutoTokenizer

from tests.server.conftest import TOOL_MODEL_NAME as MODEL
from tests.server.conftest import start_server

ASK = [{"role": "user", "content": "Is it sunny?"}]
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
          "additionalProperties": False}
JSON_ANSWER = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
SEEDS = range(16)  # random weights: some seeds write </think> within max_tokens, some do not


@pytest.fixture(scope="module")
def client(tool_model, tmp_path_factory):
    proc = start_server(tmp_path_factory, tool_model, "--kv-cache-gib", "0.05", "--max-model-len", "1024",
                        "--served-model-name", MODEL, "--reasoning-parser", "qwen3")
    yield openai.OpenAI(base_url=proc.url + "/v1", api_key="unused", max_retries=0)
    proc.stop()


def reasoning_of(message) -> str | None:
    return (message.model_extra or {}).get("reasoning_content")


@pytest.fixture(scope="module")
def answers(client) -> dict[int, object]:
    """Per seed, the non-streamed answer to ASK under the schema (sent at once: one batch)."""
    def ask(seed: int):
        return client.chat.completions.create(model=MODEL, messages=ASK, response_format=JSON_ANSWER,
                                              max_tokens=100, temperature=1.0, seed=seed).choices[0]

    with ThreadPoolExecutor(len(SEEDS)) as pool:
        return dict(zip(SEEDS, pool.map(ask, SEEDS)))


def test_the_schema_holds_for_the_answer_after_the_reasoning(answers):
    finished = [c for c in answers.values() if c.message.content is not None]
    assert finished, "no seed finished thinking; the tiny model changed?"
    for choice in finished:
        assert json.loads(choice.message.content) in ({"ok": True}, {"ok": False})
        assert "</think>" not in (reasoning_of(choice.message) or "")
        assert choice.finish_reason == "stop"
    for choice in answers.values():  # the end tag is never part of the reasoning
        assert "</think>" not in (reasoning_of(choice.message) or "")


def test_streamed_reasoning_and_answer_match_the_whole_answer(client, answers):
    seed = next(s for s, c in answers.items() if c.message.content is not None and reasoning_of(c.message))
    stream = client.chat.completions.create(model=MODEL, messages=ASK, response_format=JSON_ANSWER,
                                            max_tokens=100, temperature=1.0, seed=seed, stream=True)
    reasoning, content = "", ""
    for chunk in stream:
        delta = chunk.choices[0].delta
        more_reasoning = (delta.model_extra or {}).get("reasoning_content") or ""
        # reasoning comes first: none after the answer began (one chunk may end one and start the other)
        assert not (content and more_reasoning)
        reasoning += more_reasoning
        content += delta.content or ""
    whole = answers[seed].message
    assert reasoning.strip() == reasoning_of(whole) and content == whole.content


def test_enable_thinking_false_answers_at_once(client, tool_model):
    kwargs = {"chat_template_kwargs": {"enable_thinking": False}}
    reply = client.chat.completions.create(model=MODEL, messages=ASK, response_format=JSON_ANSWER, max_tokens=20,
                                           extra_body=kwargs)
    message = reply.choices[0].message
    assert reasoning_of(message) is None and json.loads(message.content) in ({"ok": True}, {"ok": False})
    hf = AutoTokenizer.from_pretrained(tool_model)
    ids = hf.apply_chat_template(ASK, add_generation_prompt=True, enable_thinking=False, tokenize=True)
    assert reply.usage.prompt_tokens == len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_template_arguments_may_not_replace_the_templates_own(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1,
                                       extra_body={"chat_template_kwargs": {"tools": []}})
    assert caught.value.body["param"] == "chat_template_kwargs"
