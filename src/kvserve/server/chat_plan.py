"""What a chat request turns into before the engine: the prompt (tools and template
arguments rendered by the chat template), the output's grammar, and how to read the output
(reasoning tags, tool-call format)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kvserve.openai_error import OpenAIError
from kvserve.server.constraints import requested_grammar
from kvserve.server.errors import bad_request
from kvserve.server.protocol import ChatCompletionRequest, NamedToolChoice
from kvserve.server.reasoning import ThinkTags
from kvserve.server.model_version import ModelVersion
from kvserve.server.tools.call_format import CallFormat
from kvserve.structured.grammars import GrammarError
from kvserve.structured.spec import StructuredOutputs


@dataclass
class ChatPlan:
    prompt: list[int]
    structured: StructuredOutputs | None  # the grammar the answer must follow
    call_format: CallFormat | None  # read tool calls out of the answer (None: tools not in play)
    think: ThinkTags | None  # split reasoning off the answer (None: no reasoning parser, or thinking off)


def plan_chat(version: ModelVersion, body: ChatCompletionRequest) -> ChatPlan:
    mode = body.tool_mode()
    call_format = version.call_format if mode != "none" else None
    think = version.think if (body.chat_template_kwargs or {}).get("enable_thinking", True) is not False else None
    grammar = _tool_grammar(body, mode, version) or requested_grammar(body)
    after = version.think_end_id if think is not None else None
    if grammar and think is not None and after is None:
        think = None  # no single end-tag token to start the grammar after: it holds from the first token
    structured = StructuredOutputs(grammar, after) if grammar else None
    kwargs = dict(body.chat_template_kwargs or {})
    if mode != "none":
        kwargs["tools"] = [t.model_dump(exclude_none=True) for t in body.tools or []]
    _check_inert(version, body, kwargs)
    return ChatPlan(version.chat_prompt(body.messages, body.add_generation_prompt, **kwargs), structured,
                    call_format, think)


def _tool_grammar(body: ChatCompletionRequest, mode: str, version: ModelVersion) -> str | None:
    """Under tool_choice "required" or a named function the answer is calls, enforced by a grammar."""
    if mode not in ("required", "named"):
        return None
    if requested_grammar(body) is not None:
        raise bad_request("tool_choice 'required' or a named function cannot be combined with another "
                          "output constraint (response_format, structured_outputs, guided_*)", "tool_choice")
    tools = [t.function for t in body.tools or []]
    if isinstance(body.tool_choice, NamedToolChoice):
        tools = [f for f in tools if f.name == body.tool_choice.function.name]
    try:
        return version.call_format.grammar([{"name": f.name, "parameters": f.parameters} for f in tools],
                                         mode == "required" and body.parallel_tool_calls is not False,
                                         version.marker_ids)
    except GrammarError as exc:
        raise bad_request(f"a tool's parameters cannot constrain its calls: {exc}", "tools", "invalid_value") from None


def _check_inert(version: ModelVersion, body: ChatCompletionRequest, kwargs: dict[str, Any]) -> None:
    """Client text outside message contents (tools, arguments, template variables) may not hold
    a control token's string: it is rendered by the template without the content guard."""
    calls = [c.function.model_dump() for m in body.messages for c in m.tool_calls or []]
    if version.text.holds_special(json.dumps([kwargs, calls], ensure_ascii=False)):
        raise _special_in("tools, tool calls or chat_template_kwargs")


def _special_in(where: str) -> OpenAIError:
    return bad_request(f"{where} may not contain the text of a special token (such as <|im_start|>)",
                       "messages", "invalid_value")
