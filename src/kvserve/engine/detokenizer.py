"""Incremental detokenization and stop strings, on the frontend side of the engine.

Decoding token by token breaks multi-byte UTF-8 characters and byte-level BPE pieces, so
text is emitted only once the decoded tail is complete (no U+FFFD at its end), decoded
with a few tokens of left context so that tokenizers which add spaces between pieces
still join them right.
"""

from __future__ import annotations

from collections.abc import Callable

REPLACEMENT = "\ufffd"
_CONTEXT_TOKENS = 5  # left context used to decode the next piece


def ids_decoder(tokenizer, skip_special_tokens: bool) -> Callable[[list[int]], str]:
    """`tokenizer.decode` for lists of ids; straight to the Rust tokenizer when the
    transformers wrapper would add nothing (no clean-up of spaces), which saves a few
    microseconds of Python per call: two calls per generated token."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return lambda ids: tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    return lambda ids: backend.decode(ids, skip_special_tokens=skip_special_tokens)


class IncrementalDetokenizer:
    def __init__(self, tokenizer, prompt_token_ids: list[int], stop: list[str],
                 include_stop: bool = False, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self._decode = ids_decoder(tokenizer, skip_special_tokens)
        self.tokens = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.tokens)
        self.stop = stop
        self.include_stop = include_stop
        # hold back text that could be the start of a stop string not yet complete
        self.hold = max((len(s) for s in stop), default=1) - 1 if not include_stop else 0
        self.text = ""  # all text so far, stop string removed once found
        self.sent = 0  # characters of `text` already handed out
        self.stop_reason: str | None = None

    def add_tokens(self, token_ids: list[int]) -> int:
        """Append new ids; updates `text` and, if a stop string appears, `stop_reason`.
        Returns how many ids were taken: those after the one completing a stop string are
        dropped (a step can bring several ids at once)."""
        for count, token_id in enumerate(token_ids, start=1):
            self.tokens.append(token_id)
            before = self._decode(self.tokens[self.prefix_offset:self.read_offset])
            after = self._decode(self.tokens[self.prefix_offset:])
            if len(after) > len(before) and not after.endswith(REPLACEMENT):
                self.text += after[len(before):]
                self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
                if self._check_stop(len(after) - len(before)):
                    return count
        return len(token_ids)

    def flush(self) -> None:
        """At the end: whatever is left undecoded (an incomplete character) comes out as is."""
        if self.stop_reason is None and self.read_offset < len(self.tokens):
            before = self._decode(self.tokens[self.prefix_offset:self.read_offset])
            after = self._decode(self.tokens[self.prefix_offset:])
            self.text += after[len(before):]
            self.read_offset = len(self.tokens)

    def _check_stop(self, new_chars: int) -> bool:
        if not self.stop:
            return False
        longest = max(len(s) for s in self.stop)
        window_start = max(0, len(self.text) - new_chars - longest + 1)
        found = [(self.text.find(s, window_start), s) for s in self.stop]
        found = [(i, s) for i, s in found if i >= 0]
        if not found:
            return False
        index, stop = min(found)
        self.text = self.text[: index + len(stop)] if self.include_stop else self.text[:index]
        self.stop_reason = stop
        return True

    def take_new_text(self, finished: bool) -> str:
        """Text not yet handed out, keeping back what could still turn into a stop string."""
        end = len(self.text) if finished or self.stop_reason else max(self.sent, len(self.text) - self.hold)
        delta = self.text[self.sent:end]
        self.sent = end
        return delta
