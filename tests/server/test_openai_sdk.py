"""The API as the official `openai` SDK sees it (sync and async, streaming and not)."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.server.conftest import MODEL_NAME

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [{"type": "text", "text": "The capital of "}, {"type": "text", "text": "France?"}]},
]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def async_client(server) -> openai.AsyncOpenAI:
    """Made inside the test's event loop and closed there (`async with`)."""
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def _stream_chat(client: openai.OpenAI, **kwargs) -> tuple[str, str | None, openai.types.CompletionUsage | None]:
    text, finish, usage = [], None, None
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return "".join(text), finish, usage


def test_chat_stream_joined_equals_non_stream_for_same_seed(client):
    kwargs = dict(model=MODEL_NAME, messages=MESSAGES, max_tokens=24, temperature=0.9, seed=1234)
    whole = client.chat.completions.create(**kwargs)
    streamed, finish, usage = _stream_chat(client, **kwargs)
    assert whole.choices[0].message.content
    assert streamed == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_chat_usage_matches_tokenize_and_max_completion_tokens(client, server):
    count = httpx.post(server.url + "/tokenize", json={"messages": MESSAGES}).json()["count"]
    reply = client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_completion_tokens=7,
                                           extra_body={"ignore_eos": True})
    assert reply.usage.prompt_tokens == count
    assert reply.usage.completion_tokens == 7
    assert reply.usage.total_tokens == count + 7
    assert reply.choices[0].finish_reason == "length"


def test_chat_n_choices_and_greedy_logprobs(client):
    reply = client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, n=3, max_tokens=5, temperature=0,
                                           logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert len({c.message.content for c in reply.choices}) == 1  # greedy: all the same
    assert reply.usage.completion_tokens == 15
    entries = reply.choices[0].logprobs.content
    assert len(entries) == 5
    for entry in entries:
        assert len(entry.top_logprobs) == 3
        assert entry.token == entry.top_logprobs[0].token  # greedy picks the most likely
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob >= entry.top_logprobs[2].logprob


def test_stop_string_cuts_the_text(client):
    kwargs = dict(model=MODEL_NAME, messages=MESSAGES, max_tokens=30, temperature=0, extra_body={"ignore_eos": True})
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    stop = full[10:13]
    cut = client.chat.completions.create(stop=[stop], **kwargs).choices[0]
    assert cut.message.content == full[: full.index(stop)]
    assert cut.finish_reason == "stop"
    streamed, finish, _ = _stream_chat(client, stop=[stop], **kwargs)
    assert (streamed, finish) == (cut.message.content, "stop")


def test_async_streams_equal_non_stream_completions(server):
    async def run() -> None:
        kwargs = dict(model=MODEL_NAME, prompt="Paged attention stores", max_tokens=16, temperature=0.7, seed=5)
        async with async_client(server) as client:
            whole = await client.completions.create(**kwargs)
            parts = [c.choices[0].text async for c in await client.completions.create(stream=True, **kwargs)
                     if c.choices]
        assert "".join(parts) == whole.choices[0].text
        assert whole.usage.completion_tokens >= 1

    asyncio.run(run())


def test_async_chat_concurrent_requests_are_independent_of_batching(server):
    async def one(client: openai.AsyncOpenAI) -> str:
        reply = await client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=12,
                                                     temperature=1.0, seed=99)
        return reply.choices[0].message.content

    async def run() -> list[str]:
        async with async_client(server) as client:
            return await asyncio.gather(*(one(client) for _ in range(4)))

    assert len(set(asyncio.run(run()))) == 1


def test_completion_prompt_forms(client, server):
    ids = httpx.post(server.url + "/tokenize", json={"prompt": "Hello world"}).json()["tokens"]
    greedy = dict(model=MODEL_NAME, max_tokens=6, temperature=0)
    by_text = client.completions.create(prompt="Hello world", **greedy).choices[0].text
    assert client.completions.create(prompt=ids, **greedy).choices[0].text == by_text
    batch = client.completions.create(prompt=["Hello world", "The capital"], n=2, **greedy)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    assert batch.choices[0].text == batch.choices[1].text == by_text
    assert batch.usage.prompt_tokens == len(ids) + len(httpx.post(server.url + "/tokenize",
                                                                    json={"prompt": "The capital"}).json()["tokens"])
    many_ids = client.completions.create(prompt=[ids, ids], **greedy)
    assert [c.text for c in many_ids.choices] == [by_text, by_text]


def test_completion_echo_and_logprobs(client):
    echoed = client.completions.create(model=MODEL_NAME, prompt="Hello world", max_tokens=4, temperature=0, echo=True)
    plain = client.completions.create(model=MODEL_NAME, prompt="Hello world", max_tokens=4, temperature=0,
                                      logprobs=2)
    assert echoed.choices[0].text == "Hello world" + plain.choices[0].text
    logprobs = plain.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.text_offset) == 4
    assert all(lp <= 0 for lp in logprobs.token_logprobs)
    assert all(len(top) >= 1 for top in logprobs.top_logprobs)


def test_models_tokenize_detokenize(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert client.models.retrieve(MODEL_NAME).id == MODEL_NAME
    tokens = httpx.post(server.url + "/tokenize", json={"prompt": "naïve café"}).json()
    assert tokens["count"] == len(tokens["tokens"]) and tokens["max_model_len"] == 256
    text = httpx.post(server.url + "/detokenize", json={"tokens": tokens["tokens"]}).json()["prompt"]
    assert text == "naïve café"


def test_health_ready_version(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready").json()["status"] == "ready"
    from kvserve import __version__

    assert httpx.get(server.url + "/version").json() == {"version": __version__}
