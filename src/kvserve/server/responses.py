"""Response bodies of the OpenAI-compatible API (what the official SDKs parse)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> Usage:
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens,
                   prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens))


# -- chat ----------------------------------------------------------------------------


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None


def _absent_if_none(value: object) -> bool:
    return value is None


class FunctionCallOut(BaseModel):
    name: str
    arguments: str  # JSON text


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    reasoning_content: str | None = Field(None, exclude_if=_absent_if_none)  # with a reasoning parser
    tool_calls: list[ToolCallOut] | None = Field(None, exclude_if=_absent_if_none)


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None
    stop_reason: int | str | None = None  # vLLM extra: the stop string or token id


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class FunctionCallDelta(BaseModel):
    name: str | None = Field(None, exclude_if=_absent_if_none)  # first delta of a call only
    arguments: str = ""


class ToolCallDelta(BaseModel):
    index: int
    id: str | None = Field(None, exclude_if=_absent_if_none)  # first delta of a call only
    type: Literal["function"] | None = Field(None, exclude_if=_absent_if_none)
    function: FunctionCallDelta


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = Field(None, exclude_if=_absent_if_none)  # first chunk only
    content: str | None = None
    reasoning_content: str | None = Field(None, exclude_if=_absent_if_none)
    tool_calls: list[ToolCallDelta] | None = Field(None, exclude_if=_absent_if_none)


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None  # the model version that produced it


# -- text completions ----------------------------------------------------------------


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


# -- models and tokenizer endpoints --------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kvserve"
    root: str | None = None
    max_model_len: int | None = None  # known once loaded
    version: str | None = None  # NAME:VERSION it answers with (or would load)
    state: str | None = None  # loaded | loading | available


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeResponse(BaseModel):
    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeResponse(BaseModel):
    prompt: str


# -- admin -----------------------------------------------------------------------------


class SwapState(BaseModel):
    target: str
    previous: str | None
    state: Literal["loading", "draining", "done", "failed"]
    error: str | None
    requested_at: int  # epoch seconds
    switch_s: float | None  # request to new requests going to `target`
    done_s: float | None  # request to the old version freed (or the failure)


class ModelStatus(BaseModel):
    """GET /admin/models/{name}, and the answer of a swap."""

    name: str
    version: str
    state: Literal["loaded", "loading", "available"]
    pinned: bool
    in_flight: int
    memory_bytes: int  # the estimate the memory budget counts
    swap: SwapState | None
