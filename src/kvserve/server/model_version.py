"""One loaded version of a served model: its engine process and what handlers need beside it."""

from __future__ import annotations

import asyncio
from typing import Any

from kvserve.engine import AsyncLLM
from kvserve.sampling_defaults import SamplingDefaults
from kvserve.server.errors import bad_request
from kvserve.server.protocol import ChatMessage
from kvserve.server.reasoning import REASONING_PARSERS
from kvserve.server.settings import TextOptions
from kvserve.server.tools import pick_format
from kvserve.tokenizer import ClientTextEncoder, TokenizerError


class ModelVersion:
    """A served name bound to one engine. `leases` counts the requests that picked it and
    have not finished answering: a hot swap frees the old version only once it is zero."""

    def __init__(self, name: str, label: str, engine: AsyncLLM, sampling_defaults: SamplingDefaults,
                 weight_bytes: int, options: TextOptions) -> None:
        self.name = name
        self.label = label  # NAME:VERSION (or the directory's version): the header and system_fingerprint
        self.engine = engine
        self.sampling_defaults = sampling_defaults
        self.weight_bytes = weight_bytes
        tokenizer = engine.tokenizer
        self.text = ClientTextEncoder(tokenizer, options.allow_special_tokens)  # how client text becomes token ids
        # how this model writes tool calls, and its reasoning tags when a reasoning parser is on
        self.call_format = pick_format(options.tool_call_parser, str(getattr(tokenizer, "chat_template", "")))
        self.think = REASONING_PARSERS.get(options.reasoning_parser or "")
        self.think_end_id = _single_token(tokenizer, self.think.end) if self.think else None  # a grammar starts after it
        # tool-call markers that are one token, and its id
        self.marker_ids = {m: i for m in self.call_format.markers() if (i := _single_token(tokenizer, m)) is not None}
        self.leases = 0
        self._drained = asyncio.Event()
        self._drained.set()

    @property
    def fingerprint(self) -> str:
        return self.label

    def lease(self) -> None:
        self.leases += 1
        self._drained.clear()

    def release(self) -> None:
        self.leases = max(0, self.leases - 1)
        if self.leases == 0:
            self._drained.set()

    async def drained(self) -> None:
        """Returns once no request holds this version."""
        await self._drained.wait()

    def chat_prompt(self, messages: list[ChatMessage], add_generation_prompt: bool = True,
                    **template_kwargs: Any) -> list[int]:
        """`template_kwargs`: the template's other variables (tools, enable_thinking, ...)."""
        conversation = [m.template_dict() for m in messages]
        try:
            return self.text.chat(conversation, add_generation_prompt, **template_kwargs)
        except TokenizerError as exc:
            raise bad_request(str(exc), "messages") from None
        except Exception as exc:  # noqa: BLE001 - a template that raises is the caller's input problem
            raise bad_request(f"the chat template failed on these messages: {exc}", "messages") from None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.text.encode(text, add_special_tokens)

    def decode(self, token_ids: list[int]) -> str:
        return self.engine.tokenizer.decode(token_ids)


def _single_token(tokenizer: Any, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None
