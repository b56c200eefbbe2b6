"""The fake upstream's answers: the bytes of one completion (JSON, or SSE chunks built
from a frame dumped once), and the simulated prefix cache that sets its time to first token."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import OrderedDict
from typing import Any

TEXT_MARK = "\x00text\x00"  # stands for a token's text in the cached chunk frame
CHUNK_CHARS = 64  # granularity of the simulated prefix cache


def prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return "".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else json.dumps(prompt)


class PrefixCache:
    """LRU of chained chunk hashes: how many leading characters of a prompt were seen before."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[bytes, None] = OrderedDict()

    def lookup_and_insert(self, text: str) -> int:
        cached, parent, hit_run = 0, b"", True
        for start in range(0, len(text) - CHUNK_CHARS + 1, CHUNK_CHARS):
            parent = hashlib.blake2b(parent + text[start : start + CHUNK_CHARS].encode(), digest_size=16).digest()
            if hit_run and parent in self.entries:
                cached += CHUNK_CHARS
                self.entries.move_to_end(parent)
            else:
                hit_run = False
                self.entries[parent] = None
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        return cached


class Completion:
    """Builds the JSON and SSE bytes of one answer (chat or text completion)."""

    def __init__(self, chat: bool, model: str, prompt_tokens: int, n_tokens: int,
                 tokens: list[str] | None = None) -> None:
        self.chat, self.model, self.n = chat, model, n_tokens
        self.tokens = tokens or []
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n_tokens,
                      "total_tokens": prompt_tokens + n_tokens}
        self.finish = "length"
        self._frame: tuple[bytes, ...] | None = None  # a token chunk's bytes around its text

    def token(self, i: int) -> str:
        return self.tokens[i % len(self.tokens)] if self.tokens else f"tok{i} "

    def _choice(self, text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
        if not self.chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        delta: dict[str, Any] = {} if text is None else {"content": text}
        if first:
            delta["role"] = "assistant"
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        body: dict[str, Any] = {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                                "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    def token_chunk(self, i: int) -> bytes:
        if i == 0:
            return self._chunk([self._choice(self.token(i), None, first=True)])
        if self._frame is None:  # later chunks differ only in their text: dump the rest once
            self._frame = tuple(self._chunk([self._choice(TEXT_MARK, None)]).split(json.dumps(TEXT_MARK).encode()))
        if len(self._frame) != 2:  # the mark occurs in the id or model too
            return self._chunk([self._choice(self.token(i), None)])
        return self._frame[0] + json.dumps(self.token(i)).encode() + self._frame[1]

    def final_chunks(self, include_usage: bool) -> bytes:
        out = self._chunk([self._choice(None if self.chat else "", self.finish)])
        if include_usage:
            out += self._chunk([], self.usage)
        return out + b"data: [DONE]\n\n"

    def full(self) -> bytes:
        text = "".join(self.token(i) for i in range(self.n))
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "logprobs": None, "finish_reason": self.finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": self.finish}
        obj = "chat.completion" if self.chat else "text_completion"
        return json.dumps({"id": self.id, "object": obj, "created": self.created, "model": self.model,
                           "choices": [choice], "usage": self.usage}).encode()
