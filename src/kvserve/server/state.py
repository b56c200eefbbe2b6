"""What every handler needs: the engine client, settings, metrics, model names, tokenizer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.requests import Request

from kvserve.engine import AsyncLLM
from kvserve.server.errors import bad_request, model_not_found
from kvserve.server.metrics import ServerMetrics
from kvserve.server.protocol import ChatMessage
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

    def __post_init__(self) -> None:
        self.text = ClientTextEncoder(self.engine.tokenizer, self.settings.allow_special_tokens_in_content)

    @property
    def model_name(self) -> str:
        return self.engine.served_model_name

    def resolve_model(self, name: str | None) -> str:
        """The served name for a request's `model` (None means the served model); else 404."""
        if name is None or name == self.model_name:
            return self.model_name
        raise model_not_found(name)

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

    def timeout_for(self, requested: float | None) -> float | None:
        return requested if requested is not None else self.settings.request_timeout


def server_state(request: Request) -> ServerState:
    return request.app.state.kvserve


def request_log(request: Request) -> RequestLogRecord:
    """The record the logging middleware made for this request (a throwaway one without it)."""
    record = request.scope.get("state", {}).get(STATE_KEY)
    if record is None:
        record = RequestLogRecord(request.method, request.url.path)
        request.scope.setdefault("state", {})[STATE_KEY] = record
    return record
