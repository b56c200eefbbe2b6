"""Request bodies of the OpenAI-compatible API, validated the way OpenAI validates them.

Strict types (no "10" for 10, no true for 1), unknown fields rejected, ranges checked:
a body that fails here becomes a 400 with an OpenAI-shaped error naming the field.
The kvserve extras (`top_k`, `min_p`, ...) are accepted in the body as vLLM accepts them;
the OpenAI SDK sends them through `extra_body`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_N = 128  # OpenAI's cap on choices per request
MAX_STOP = 16  # stop strings per request
INT64 = 2**63

NonEmptyStr = Annotated[str, Field(min_length=1)]


class ParamError(ValueError):
    """A rule across fields failed; `param` names the field to blame in the 400."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StreamOptions(Body):
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM extra: usage on every chunk


class SamplingFields(Body):
    """Fields shared by chat and text completions (OpenAI's, then kvserve's extras)."""

    model: str | None = None  # None = the served model
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    stop: NonEmptyStr | Annotated[list[NonEmptyStr], Field(max_length=MAX_STOP)] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)  # None = the served model's default (sampling_defaults)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    user: str | None = None
    logit_bias: dict[str, float] | None = None  # only empty is supported
    # kvserve / vLLM extras
    top_k: int = Field(0, ge=-1)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    priority: int = Field(0, ge=-INT64, lt=INT64)
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    request_timeout: float | None = Field(None, gt=0.0, le=86400.0)  # seconds; ends the request with 408

    @model_validator(mode="after")
    def _check_common(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise ParamError("stream_options", "stream_options is only allowed when stream is true")
        if self.logit_bias:
            raise ParamError("logit_bias", "logit_bias is not supported")
        return self

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


# -- chat ----------------------------------------------------------------------------


class TextPart(Body):
    type: Literal["text"]
    text: str


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _check_content(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ParamError("messages", f"a {self.role} message needs content")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ResponseFormat(Body):
    type: Literal["text"]  # JSON modes are not supported


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)  # deprecated by OpenAI, still accepted
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[dict] | None = None  # tool calling is not supported: only empty
    tool_choice: Literal["none"] | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    add_generation_prompt: bool = True  # vLLM extra

    @model_validator(mode="after")
    def _check_chat(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ParamError("top_logprobs", "top_logprobs requires logprobs to be true")
        if self.tools:
            raise ParamError("tools", "tool calling is not supported")
        return self

    def output_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


# -- text completions ----------------------------------------------------------------

# any int: the range is the model's vocabulary, checked by the handler (sampling.check_token_ids)
TokenIds = list[int]
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | TokenIds | list[TokenIds]
    max_tokens: int | None = Field(None, ge=1)  # None = DEFAULT_COMPLETION_TOKENS
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)
    best_of: int | None = Field(None, ge=1, le=MAX_N)
    suffix: None = None  # insertion is not supported

    @model_validator(mode="after")
    def _check_completion(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and (not self.prompt or any(p == [] for p in self.prompt)):
            raise ParamError("prompt", "prompt must not be empty")
        if self.best_of is not None and self.best_of != self.n:
            raise ParamError("best_of", "best_of other than n is not supported")
        if self.echo and self.logprobs is not None:
            raise ParamError("echo", "echo together with logprobs is not supported (no prompt logprobs)")
        return self

    def output_limit(self) -> int:
        return self.max_tokens if self.max_tokens is not None else DEFAULT_COMPLETION_TOKENS

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a batch: strings and/or token id lists."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and isinstance(prompt[0], int):
            return [list(prompt)]
        return list(prompt)


# -- tokenizer endpoints (vLLM's shapes) ---------------------------------------------


class TokenizeRequest(Body):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ParamError("prompt", "give exactly one of prompt and messages")
        return self


class DetokenizeRequest(Body):
    model: str | None = None
    tokens: TokenIds


class SwapRequest(Body):
    """POST /admin/models/{name}/versions."""

    version: Annotated[str, Field(min_length=1, max_length=300)]  # NAME:VERSION or NAME@TAG in the registry
    wait: bool = True  # answer once the new version serves (or failed); false: 202 at once
    drain_timeout: Annotated[float, Field(gt=0)] | None = None  # seconds old requests get; None = shutdown_timeout
