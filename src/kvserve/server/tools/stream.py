"""Tool calls out of a model's text, as it arrives: content, then each call's name, then its
arguments piece by piece (what OpenAI's streamed `delta.tool_calls` carry).

The arguments are the exact text the model wrote for the arguments object, found by
following JSON nesting (strings and escapes included); a non-streamed answer is this same
parser run over the whole text, so both give the same calls.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from kvserve.server.tools.call_format import CallFormat

_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*')
MAX_HEAD_CHARS = 1024  # a call's text before its arguments; past it, the "call" is plain text


@dataclass
class CallDelta:
    """Part of call `index`: the first carries its id and name, the rest arguments text."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass
class ParsedCall:
    id: str
    name: str
    arguments: str = ""
    complete: bool = False


@dataclass
class Parts:
    """What one piece of text turned into."""

    content: str = ""
    calls: list[CallDelta] = field(default_factory=list)


class ToolCallStream:
    def __init__(self, fmt: CallFormat) -> None:
        self.fmt = fmt
        self.calls: list[ParsedCall] = []
        self._buf = ""
        self._pos = 0
        self._mode = "lead" if fmt.open is None else "text"
        self._head_start = 0
        self._nesting = _Nesting()

    def feed(self, text: str) -> Parts:
        self._buf += text
        parts = Parts()
        while getattr(self, f"_{self._mode}")(parts):
            pass
        return parts

    def finish(self) -> Parts:
        """The end of the text: what was held back as a possible marker is content after all."""
        parts = Parts()
        if self._mode in ("text", "lead"):
            parts.content = self._buf[self._pos:]
        elif self._mode == "head":
            parts.content = self._buf[self._head_start:]
        elif self._mode == "tail" and self.calls and self.fmt.close is not None:
            self.calls[-1].complete = True  # the model ended right after the object, without the marker
        self._pos = len(self._buf)
        return parts

    # each mode consumes what it can; True = the mode changed, run the next one
    def _text(self, parts: Parts) -> bool:
        marker = self.fmt.open
        if marker is None:
            parts.content += self._buf[self._pos:]
            self._pos = len(self._buf)
            return False
        found = self._buf.find(marker, self._pos)
        if found < 0:
            end = len(self._buf) - partial_suffix(self._buf, self._pos, marker)
            parts.content += self._buf[self._pos:end]
            self._pos = end
            return False
        parts.content += self._buf[self._pos:found]
        self._head_start = found
        self._pos = found + len(marker)
        self._mode = "head"
        return True

    def _lead(self, parts: Parts) -> bool:
        rest = self._buf[self._pos:].lstrip()
        for marker in self.fmt.lead:
            if rest.startswith(marker):
                self._pos = self._buf.index(marker, self._pos) + len(marker)
                return True
            if marker.startswith(rest):
                return False  # could still become the marker
        if not rest:
            return False
        self._head_start = self._pos
        self._mode = "head" if rest[0] == "{" else "text"
        return True

    def _head(self, parts: Parts) -> bool:
        match = _HEAD.match(self._buf, self._pos)
        if match is None:
            if len(self._buf) - self._pos > MAX_HEAD_CHARS:
                self._pos, self._mode = self._head_start, "plain"
                return True
            return False
        name = json.loads(f'"{match.group(1)}"')
        call = ParsedCall(f"call_{uuid.uuid4().hex[:24]}", name)
        self.calls.append(call)
        parts.calls.append(CallDelta(len(self.calls) - 1, "", call.id, name))
        self._pos, self._mode, self._nesting = match.end(), "args", _Nesting()
        return True

    def _args(self, parts: Parts) -> bool:
        if self._nesting.depth == 0:  # before the value: whitespace the head's match could not see yet
            while self._pos < len(self._buf) and self._buf[self._pos].isspace():
                self._pos += 1
        end = self._nesting.scan(self._buf, self._pos)
        piece = self._buf[self._pos:end]
        if piece:
            self.calls[-1].arguments += piece
            parts.calls.append(CallDelta(len(self.calls) - 1, piece))
        self._pos = end
        if self._nesting.closed:
            self._mode = "tail"
            return True
        return False

    def _tail(self, parts: Parts) -> bool:
        """After the arguments: the call object's `}`, then the close marker or a separator."""
        rest = self._buf[self._pos:]
        if self.fmt.close is not None:
            close = self.fmt.close
            found = rest.find(close)
            if found < 0:
                return False
            self.calls[-1].complete = True
            self._pos += found + len(close)
            self._mode = "text"
            return True
        match = re.match(r"\s*\}\s*(;?)", rest)
        if match is None or match.end() == len(rest) and not match.group(1):
            if match is not None:
                self.calls[-1].complete = True
            return False
        self.calls[-1].complete = True
        self._pos += match.end()
        self._head_start = self._pos
        self._mode = "head" if match.group(1) else "plain"
        return True

    def _plain(self, parts: Parts) -> bool:
        """Text that is not a call after all: content, to the end."""
        parts.content += self._buf[self._pos:]
        self._pos = len(self._buf)
        return False


class _Nesting:
    """Follows a JSON value's brackets (outside strings) to find where it ends."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = self.escaped = self.closed = False

    def scan(self, text: str, start: int) -> int:
        """Index just past the value's last character, or len(text) if it goes on."""
        for i in range(start, len(text)):
            c = text[i]
            if self.in_string:
                self.escaped, self.in_string = (False, True) if self.escaped else (c == "\\", c != '"')
            elif c == '"':
                self.in_string = True
            elif c in "{[":
                self.depth += 1
            elif c in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.closed = True
                    return i + 1
        return len(text)


def partial_suffix(text: str, start: int, marker: str) -> int:
    """Length of the longest end of text[start:] that begins `marker` (held back as maybe-marker)."""
    for n in range(min(len(marker) - 1, len(text) - start), 0, -1):
        if marker.startswith(text[len(text) - n:]):
            return n
    return 0


def parse_calls(fmt: CallFormat, text: str) -> tuple[str, list[ParsedCall]]:
    """A whole answer: its content (text outside complete calls) and its complete calls."""
    stream = ToolCallStream(fmt)
    content = stream.feed(text).content + stream.finish().content
    return content, [c for c in stream.calls if c.complete]
