"""One loaded version of a served model: its engine process and what handlers need beside it."""

from __future__ import annotations

import asyncio

from kvserve.engine import AsyncLLM
from kvserve.sampling_defaults import SamplingDefaults
from kvserve.server.errors import bad_request
from kvserve.server.protocol import ChatMessage
from kvserve.tokenizer import ClientTextEncoder, TokenizerError


class ModelVersion:
    """A served name bound to one engine. `leases` counts the requests that picked it and
    have not finished answering: a hot swap frees the old version only once it is zero."""

    def __init__(self, name: str, label: str, engine: AsyncLLM, sampling_defaults: SamplingDefaults,
                 weight_bytes: int, allow_special_tokens: bool) -> None:
        self.name = name
        self.label = label  # NAME:VERSION (or the directory's version): the header and system_fingerprint
        self.engine = engine
        self.sampling_defaults = sampling_defaults
        self.weight_bytes = weight_bytes
        self.text = ClientTextEncoder(engine.tokenizer, allow_special_tokens)  # how client text becomes token ids
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

    def chat_prompt(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> list[int]:
        conversation = [{"role": m.role, "content": m.text()} for m in messages]
        try:
            return self.text.chat(conversation, add_generation_prompt)
        except TokenizerError as exc:
            raise bad_request(str(exc), "messages") from None
        except Exception as exc:  # noqa: BLE001 - a template that raises is the caller's input problem
            raise bad_request(f"the chat template failed on these messages: {exc}", "messages") from None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.text.encode(text, add_special_tokens)

    def decode(self, token_ids: list[int]) -> str:
        return self.engine.tokenizer.decode(token_ids)
