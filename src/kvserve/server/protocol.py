"""Request bodies of the OpenAI-compatible API, validated the way OpenAI validates them.

Strict types (no "10" for 10, no true for 1), unknown fields rejected, ranges checked:
a body that fails here becomes a 400 with an OpenAI-shaped error naming the field.
The kvserve extras (`top_k`, `min_p`, ...) are accepted in the body as vLLM accepts them;
the OpenAI SDK sends them through `extra_body`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

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
    # structured outputs: OpenAI's response_format, vLLM's structured_outputs and guided_* fields
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputsField | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: NonEmptyStr | None = None
    guided_choice: Annotated[list[NonEmptyStr], Field(min_length=1, max_length=MAX_CHOICES)] | None = None
    guided_grammar: NonEmptyStr | None = None

    @model_validator(mode="after")
    def _check_common(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise ParamError("stream_options", "stream_options is only allowed when stream is true")
        if self.logit_bias:
            raise ParamError("logit_bias", "logit_bias is not supported")
        given = [name for name in CONSTRAINT_FIELDS if _constrains(name, getattr(self, name))]
        if len(given) > 1:
            raise ParamError(given[1], f"give at most one of {', '.join(given)}: they constrain the same output")
        return self

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


# -- structured outputs ----------------------------------------------------------------

MAX_CHOICES = 1024  # guided_choice options
CONSTRAINT_FIELDS = ("response_format", "structured_outputs", "guided_json", "guided_regex", "guided_choice",
                     "guided_grammar")


def _constrains(name: str, value: Any) -> bool:
    return value is not None and not (name == "response_format" and value.type == "text")


class JsonSchemaFormat(Body):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # None = any JSON object
    strict: bool | None = None


class ResponseFormat(Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _check_format(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ParamError("response_format", "response_format.json_schema is required with type json_schema "
                                                "and only allowed with it")
        return self


class StructuredOutputsField(Body):
    """vLLM's `structured_outputs` extra: exactly one kind of constraint."""

    json_: dict[str, Any] | str | None = Field(None, alias="json")
    regex: NonEmptyStr | None = None
    choice: Annotated[list[NonEmptyStr], Field(min_length=1, max_length=MAX_CHOICES)] | None = None
    grammar: NonEmptyStr | None = None
    json_object: bool | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StructuredOutputsField:
        kinds = [self.json_, self.regex, self.choice, self.grammar, self.json_object or None]
        if sum(k is not None for k in kinds) != 1:
            raise ParamError("structured_outputs", "give exactly one of json, regex, choice, grammar, json_object")
        return self


# -- chat ----------------------------------------------------------------------------

MAX_TOOLS = 128  # OpenAI's cap on tools per request
FunctionName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]


class FunctionDef(Body):
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema; None = no arguments beyond an object
    strict: bool | None = None


class ToolDef(Body):
    type: Literal["function"]
    function: FunctionDef


class FunctionRef(Body):
    name: str


class NamedToolChoice(Body):
    type: Literal["function"]
    function: FunctionRef


class FunctionCall(Body):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(Body):
    id: NonEmptyStr
    type: Literal["function"] = "function"
    function: FunctionCall


class TextPart(Body):
    type: Literal["text"]
    text: str


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant messages: the calls it made
    tool_call_id: str | None = None  # tool messages: the call this answers
    reasoning_content: str | None = None  # accepted from an earlier answer, not shown to the model

    @model_validator(mode="after")
    def _check_content(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ParamError("messages", f"a {self.role} message needs content")
        if self.tool_calls and self.role != "assistant":
            raise ParamError("messages", "only assistant messages carry tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ParamError("messages", "a tool message needs tool_call_id, and only a tool message has one")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def template_dict(self) -> dict[str, Any]:
        """The message as chat templates read it (transformers' shape: arguments as an object)."""
        out: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls:
            out["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.function.name, "arguments": _arguments_object(c.function.arguments)}}
                for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


def _arguments_object(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments  # templates print a string as it is


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)  # deprecated by OpenAI, still accepted
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: Annotated[list[ToolDef], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None  # None = auto with tools
    parallel_tool_calls: bool | None = None  # None = true, as OpenAI's default
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM extra, e.g. {"enable_thinking": false}
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    add_generation_prompt: bool = True  # vLLM extra

    @model_validator(mode="after")
    def _check_chat(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ParamError("top_logprobs", "top_logprobs requires logprobs to be true")
        _check_tools(self.tools or [], self.tool_choice)
        _check_tool_messages(self.messages)
        reserved = set(self.chat_template_kwargs or {}) & RESERVED_TEMPLATE_KWARGS
        if reserved:
            raise ParamError("chat_template_kwargs", f"chat_template_kwargs may not set {sorted(reserved)}")
        return self

    def tool_mode(self) -> str:
        """'none', 'auto', 'required' or 'named' (tool_choice left out: auto with tools)."""
        if not self.tools or self.tool_choice == "none":
            return "none"
        if self.tool_choice is None:
            return "auto"
        return "named" if isinstance(self.tool_choice, NamedToolChoice) else self.tool_choice

    def output_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


# the template's own arguments, which chat_template_kwargs must not replace
RESERVED_TEMPLATE_KWARGS = {"messages", "tools", "documents", "add_generation_prompt", "tokenize",
                            "chat_template", "continue_final_message", "return_dict"}


def _check_tools(tools: list[ToolDef], choice: str | NamedToolChoice | None) -> None:
    names = [t.function.name for t in tools]
    if len(set(names)) != len(names):
        raise ParamError("tools", "tool function names must be unique")
    if choice in ("required",) or isinstance(choice, NamedToolChoice):
        if not tools:
            raise ParamError("tool_choice", "tool_choice requires tools")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise ParamError("tool_choice", f"tool_choice names the function {choice.function.name!r}, "
                                        "which is not in tools")


def _check_tool_messages(messages: list[ChatMessage]) -> None:
    """Every tool message answers a call made by an earlier assistant message."""
    called: set[str] = set()
    for i, message in enumerate(messages):
        called.update(call.id for call in message.tool_calls or [])
        if message.role == "tool" and message.tool_call_id not in called:
            raise ParamError(f"messages[{i}].tool_call_id", f"no earlier assistant message made a tool call "
                                                            f"with id {message.tool_call_id!r}")


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
