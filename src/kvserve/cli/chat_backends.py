"""Where `kvserve chat` gets its answers: an engine in this process, or a running server.

Both stream an answer as text pieces for a conversation (a list of OpenAI-style
messages). Closing the stream early (Ctrl-C) stops the generation: the local engine
aborts the request, the server sees the connection close and aborts it there.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class AnswerOptions:
    max_tokens: int  # new tokens per answer at most
    temperature: float | None  # None: the model's default (kvserve.sampling_defaults)


class ChatBackend(Protocol):
    name: str  # what the banner says the chat talks to

    def stream(self, messages: list[dict], options: AnswerOptions) -> Iterator[str]: ...


class LocalChat:
    """An engine in this process (the embedded model or --model DIR)."""

    def __init__(self, config) -> None:
        from kvserve.entrypoints.llm import LLM

        self.llm = LLM.from_config(config)
        self.name = self.llm.engine.config.model.model or "the embedded SmolLM2-135M-Instruct"
        self._ids = itertools.count()

    def stream(self, messages: list[dict], options: AnswerOptions) -> Iterator[str]:
        from kvserve.tokenizer import apply_chat_template

        engine = self.llm.engine
        prompt = apply_chat_template(engine.tokenizer, messages, add_generation_prompt=True)
        overrides = {"max_tokens": options.max_tokens}
        if options.temperature is not None:
            overrides["temperature"] = options.temperature
        request_id = f"chat-{next(self._ids)}"
        engine.add_request(request_id, prompt, self.llm.sampling_defaults.params(**overrides))
        finished = False
        try:
            while not finished:
                for delta in engine.step():
                    if delta.request_id == request_id:
                        finished = delta.finished
                        yield delta.text
        finally:
            if not finished:
                engine.abort([request_id])


class RemoteChat:
    """A running OpenAI-compatible server (`kvserve serve`, or any other), through the
    official `openai` client."""

    def __init__(self, url: str, model: str | None, api_key: str | None) -> None:
        from openai import OpenAI

        base = url.rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        self.client = OpenAI(base_url=base, api_key=api_key or "unused", max_retries=0)
        self.model = model or self.client.models.list().data[0].id
        self.name = f"{self.model} at {base}"

    def stream(self, messages: list[dict], options: AnswerOptions) -> Iterator[str]:
        extra = {} if options.temperature is None else {"temperature": options.temperature}
        stream = self.client.chat.completions.create(model=self.model, messages=messages, stream=True,
                                                     max_tokens=options.max_tokens, **extra)
        try:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        finally:
            stream.close()  # early close: the server aborts the request
