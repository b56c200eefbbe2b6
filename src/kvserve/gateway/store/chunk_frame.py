"""Reading a stream's answer text without parsing every chunk as JSON.

The chunks of one stream are alike: after the first token, each `data:` line is the same
bytes around one JSON string, the token's text (`"content"` of the delta, or `"text"`).
`scan` cuts that frame from a chunk it parsed and, for each following line that is the
frame around one string token, keeps only the token's bytes; all kept tokens are decoded
at the end in one `json.loads`. Other lines are parsed whole, in order. A frame is only
cut from a chunk whose replay effect is its text alone (one choice of index 0, no finish
reason, no usage), and used only once parsing it around a sentinel string gives that
chunk with the sentinel as its text (checked when a first line matches it), which proves
the string sits where the text is. So a framed line reads as its frame's chunk with
another text, as the full parse would.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # one JSON string, escapes unchecked (json checks)
SENTINEL = "\x00kvserve-frame\x00"  # no upstream sends NULs in its text; if one does, no frame
SENTINEL_TOKEN = json.dumps(SENTINEL).encode()
DONE = b"[DONE]"
# this many more chunks parsed whole than framed: the chunks differ beyond their text (logprobs or
# usage in each), and the slow path's one parse of them all is cheaper than one parse each
MAX_PARSED_AHEAD = 3


@dataclass
class Frame:
    """A `data:` line's bytes before and after the text's string token."""

    head: bytes
    tail: bytes
    chunk: Any  # the parsed chunk it was cut from
    proven: bool = False

    def holds_text(self, chat: bool) -> bool:
        """Whether any string in the frame's place would be the chunk's text (parsed once)."""
        if not self.proven:
            holder = text_holder(self.chunk, chat)
            key = "content" if chat else "text"
            assert holder is not None  # `cut` took only such chunks
            text, holder[key] = holder[key], SENTINEL
            try:
                self.proven = parse_one(data_payload(self.head + SENTINEL_TOKEN + self.tail) or b"") == self.chunk
            finally:
                holder[key] = text
        return self.proven

    def token(self, line: bytes) -> bytes | None:
        """The string token if `line` is this frame around exactly one, else None."""
        if not (line.startswith(self.head) and line.endswith(self.tail)):
            return None
        start, end = len(self.head), len(line) - len(self.tail)
        return line[start:end] if TOKEN.fullmatch(line, start, end) else None


@dataclass
class Scan:
    """A stream read in order: `chunks` are the parsed chunks, each with the number of
    framed texts that came before it; `texts` are the framed lines' texts."""

    chunks: list[tuple[int, Any]]
    texts: list[str]


def scan(stream: bytes, chat: bool) -> Scan | None:
    """The stream's chunks and framed texts, or None when a line is not plainly one JSON
    value, few lines fit a frame or the stream has carriage returns (the caller then
    parses it the slow way)."""
    if b"\r" in stream:
        return None
    tokens: list[bytes] = []
    chunks: list[tuple[int, Any]] = []
    frame: Frame | None = None
    for line in stream.split(b"\n"):
        if not line:
            continue  # between events
        if frame is not None and (token := frame.token(line)) is not None:
            if frame.holds_text(chat):
                tokens.append(token)
                continue
            frame = None
        payload = data_payload(line)
        if payload is None:
            continue
        chunk = parse_one(payload)
        if chunk is None:
            return None
        chunks.append((len(tokens), chunk))
        if len(chunks) > len(tokens) + MAX_PARSED_AHEAD:
            return None
        frame = cut(line, chunk, chat) or frame
    try:
        texts = json.loads(b"[" + b",".join(tokens) + b"]")
    except ValueError:
        return None
    return Scan(chunks, texts)


def data_payload(line: bytes) -> bytes | None:
    """What a `data:` line carries (one leading space dropped); None for other lines,
    empty payloads and the closing `[DONE]`."""
    if not line.startswith(b"data:"):
        return None
    payload = line[6:] if line.startswith(b"data: ") else line[5:]
    return payload if payload and payload != DONE else None


def parse_one(payload: bytes) -> Any:
    """The one JSON value a payload holds, or None (not JSON, or not exactly one value).
    Parsed inside brackets, as the whole stream's payloads are on the slow path."""
    try:
        values = json.loads(b"[" + payload + b"]")
    except ValueError:
        return None
    return values[0] if len(values) == 1 else None


def cut(line: bytes, chunk: Any, chat: bool) -> Frame | None:
    """The frame around `chunk`'s text, when its text is all a replay takes from it
    (not yet proven: see `Frame.holds_text`)."""
    holder = text_holder(chunk, chat)
    if holder is None or holder["content" if chat else "text"] == SENTINEL:
        return None
    marker = b'"content":' if chat else b'"text":'
    start = line.find(marker)
    match = TOKEN.match(line, start + len(marker)) if start >= 0 else None
    return None if match is None else Frame(line[:start + len(marker)], line[match.end():], chunk)


def text_holder(chunk: Any, chat: bool) -> dict[str, Any] | None:
    """The dict that holds the chunk's text (the delta, or the choice), if the chunk is one
    choice of index 0 with a string text, no finish reason and no usage."""
    if not isinstance(chunk, dict) or chunk.get("usage"):
        return None
    choices = chunk.get("choices")
    if not (isinstance(choices, list) and len(choices) == 1 and isinstance(choices[0], dict)):
        return None
    choice = choices[0]
    if choice.get("index", 0) != 0 or choice.get("finish_reason"):
        return None
    holder = choice.get("delta") if chat else choice
    key = "content" if chat else "text"
    return holder if isinstance(holder, dict) and isinstance(holder.get(key), str) else None
