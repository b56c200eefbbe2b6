"""Reasoning text (`<think>…</think>`) split from the answer, as it arrives.

With a reasoning parser on, an answer is reasoning until the end tag: the opening tag is
optional (Qwen3 writes it; later templates put it in the prompt), and an answer cut before
the end tag is all reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvserve.server.tools.stream import partial_suffix


@dataclass(frozen=True)
class ThinkTags:
    start: str
    end: str


# --reasoning-parser name -> the tags that model family writes
REASONING_PARSERS: dict[str, ThinkTags] = {"qwen3": ThinkTags("<think>", "</think>")}


class ReasoningStream:
    def __init__(self, tags: ThinkTags) -> None:
        self.tags = tags
        self._buf = ""
        self._pos = 0
        self._mode = "open"  # -> "think" -> "answer"
        self._answer_started = False

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, answer) text this piece completes."""
        self._buf += text
        if self._mode == "open" and not self._skip_start_tag():
            return "", ""
        if self._mode == "think":
            return self._think()
        return "", self._answer(len(self._buf))

    def finish(self) -> tuple[str, str]:
        """What was held back (a possible tag) is the mode's text after all."""
        rest = self._buf[self._pos:]
        self._pos = len(self._buf)
        return (rest, "") if self._mode != "answer" else ("", rest)

    def _skip_start_tag(self) -> bool:
        start = self.tags.start
        head = self._buf.lstrip()
        if start.startswith(head) and len(head) < len(start):
            return False  # could still be the tag
        if head.startswith(start):
            self._pos = len(self._buf) - len(head) + len(start)
        self._mode = "think"
        return True

    def _think(self) -> tuple[str, str]:
        end = self.tags.end
        found = self._buf.find(end, self._pos)
        if found < 0:
            stop = len(self._buf) - partial_suffix(self._buf, self._pos, end)
            reasoning, self._pos = self._buf[self._pos:stop], stop
            return reasoning, ""
        reasoning = self._buf[self._pos:found]
        self._pos = found + len(end)
        self._mode = "answer"
        return reasoning, self._answer(len(self._buf))

    def _answer(self, stop: int) -> str:
        text = self._buf[self._pos:stop]
        self._pos = stop
        if not self._answer_started:  # the blank line after the end tag is not part of the answer
            text = text.lstrip()
            self._answer_started = bool(text)
        return text

