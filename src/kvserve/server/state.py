"""What every handler needs: the engine client, settings, metrics, model names, tokenizer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from kvserve.engine import AsyncLLM
from kvserve.server.errors import bad_request, model_not_found
from kvserve.server.metrics import ServerMetrics
from kvserve.server.protocol import ChatMessage
from kvserve.server.reasoning import REASONING_PARSERS, ThinkTags
from kvserve.server.tools import pick_format
from kvserve.server.tools.call_format import CallFormat
from kvserve.server.request_log import STATE_KEY, RequestLogRecord
from kvserve.sampling_defaults import SamplingDefaults
from kvserve.server.settings import ServerSettings
from kvserve.tokenizer import ClientTextEncoder, TokenizerError


@dataclass
class ServerState:
    engine: AsyncLLM
    settings: ServerSettings
    metrics: ServerMetrics
    sampling_defaults: SamplingDefaults = field(default_factory=SamplingDefaults)  # for fields a request leaves out
    started: int = field(default_factory=lambda: int(time.time()))
    text: ClientTextEncoder = field(init=False)  # how client text becomes token ids
    call_format: CallFormat = field(init=False)  # how this model writes tool calls
    think: ThinkTags | None = field(init=False)  # its reasoning tags, when a reasoning parser is on
    think_end_id: int | None = field(init=False)  # the end tag's token id (a grammar starts after it)
    marker_ids: dict[str, int] = field(init=False)  # tool-call markers that are one token, and its id

    def __post_init__(self) -> None:
        tokenizer = self.engine.tokenizer
        self.text = ClientTextEncoder(tokenizer, self.settings.allow_special_tokens_in_content)
        self.call_format = pick_format(self.settings.tool_call_parser, str(getattr(tokenizer, "chat_template", "")))
        self.think = REASONING_PARSERS.get(self.settings.reasoning_parser or "")
        self.think_end_id = _single_token(tokenizer, self.think.end) if self.think else None
        self.marker_ids = {m: i for m in self.call_format.markers() if (i := _single_token(tokenizer, m)) is not None}

    @property
    def model_name(self) -> str:
        return self.engine.served_model_name

    def resolve_model(self, name: str | None) -> str:
        """The served name for a request's `model` (None means the served model); else 404."""
        if name is None or name == self.model_name:
            return self.model_name
        raise model_not_found(name)

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

    def timeout_for(self, requested: float | None) -> float | None:
        return requested if requested is not None else self.settings.request_timeout


def _single_token(tokenizer: Any, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def server_state(request: Request) -> ServerState:
    return request.app.state.kvserve


def request_log(request: Request) -> RequestLogRecord:
    """The record the logging middleware made for this request (a throwaway one without it)."""
    record = request.scope.get("state", {}).get(STATE_KEY)
    if record is None:
        record = RequestLogRecord(request.method, request.url.path)
        request.scope.setdefault("state", {})[STATE_KEY] = record
    return record
