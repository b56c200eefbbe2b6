"""One chat choice's text, split into reasoning, answer text and tool calls as it arrives.

Each part is a null object when the request does not use it: without a reasoning parser
all text is answer; without tools no text is a call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvserve.server.reasoning import ReasoningStream, ThinkTags
from kvserve.server.tools.call_format import CallFormat
from kvserve.server.tools.stream import CallDelta, ParsedCall, Parts, ToolCallStream


@dataclass
class ChatParts:
    reasoning: str = ""
    content: str = ""
    calls: list[CallDelta] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.calls)


class _NoReasoning:
    def feed(self, text: str) -> tuple[str, str]:
        return "", text

    def finish(self) -> tuple[str, str]:
        return "", ""


class _NoTools:
    calls: list[ParsedCall] = []

    def feed(self, text: str) -> Parts:
        return Parts(content=text)

    def finish(self) -> Parts:
        return Parts()


class ChatOutput:
    def __init__(self, think: ThinkTags | None, call_format: CallFormat | None) -> None:
        self.reasoning = ReasoningStream(think) if think else _NoReasoning()
        self.tools = ToolCallStream(call_format) if call_format else _NoTools()
        self.plain = think is None and call_format is None  # all text is content, as it comes

    def feed(self, text: str) -> ChatParts:
        reasoning, answer = self.reasoning.feed(text)
        parts = self.tools.feed(answer)
        return ChatParts(reasoning, parts.content, parts.calls)

    def finish(self) -> ChatParts:
        reasoning, answer = self.reasoning.finish()
        parts = self.tools.feed(answer)
        last = self.tools.finish()
        return ChatParts(reasoning, parts.content + last.content, parts.calls + last.calls)

    @property
    def calls(self) -> list[ParsedCall]:
        """The complete calls so far."""
        return [c for c in self.tools.calls if c.complete]


@dataclass
class ChatAnswer:
    reasoning: str | None
    content: str | None
    calls: list[ParsedCall]


def split_answer(text: str, think: ThinkTags | None, call_format: CallFormat | None) -> ChatAnswer:
    """A whole answer's parts (the streamed parser run over all of it)."""
    output = ChatOutput(think, call_format)
    first, last = output.feed(text), output.finish()
    reasoning = (first.reasoning + last.reasoning).strip()
    content = first.content + last.content
    if call_format is not None:  # the text around calls: blank lines between them are not an answer
        content = content.strip() or None
    elif think is not None:
        content = content or None  # an answer cut off while thinking has none
    return ChatAnswer(reasoning or None if think else None, content, output.calls)
