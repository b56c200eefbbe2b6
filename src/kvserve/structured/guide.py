"""One request's walk through its grammar: which output tokens the matcher has taken so far."""

from __future__ import annotations

import llguidance

from kvserve.structured.spec import StructuredOutputs


class Guide:
    """Follows a request's output tokens through a matcher.

    The runner's token list is the truth: `catch_up` feeds the matcher whatever output the
    list holds that it has not seen, and rolls back what the list no longer holds (a token
    dropped when its request was preempted), so the guide survives preemption unchanged.
    With `after_token_id` the grammar starts after that token's first occurrence.
    """

    def __init__(self, matcher: llguidance.LLMatcher, spec: StructuredOutputs) -> None:
        self.matcher = matcher
        self.after = spec.after_token_id
        self.start: int | None = 0 if self.after is None else None  # output index where the grammar starts
        self.scanned = 0  # output tokens searched for `after` so far
        self.consumed = 0  # output tokens (from `start`) the matcher has taken

    @property
    def active(self) -> bool:
        """Whether the next token is constrained (False before `after`, or if the grammar broke)."""
        return self.start is not None and not self.matcher.is_error()

    @property
    def finished(self) -> bool:
        """The grammar is complete: only an end-of-sequence token may follow."""
        return self.matcher.is_stopped()

    def catch_up(self, token_ids: list[int], num_prompt: int) -> None:
        """Bring the matcher to the end of the output `token_ids[num_prompt:]`."""
        num_output = len(token_ids) - num_prompt
        if self.start is None and not self._find_start(token_ids, num_prompt, num_output):
            return
        have = num_output - self.start
        if have < self.consumed:
            self.matcher.rollback(self.consumed - have)
            self.consumed = have
        if have > self.consumed:
            first = num_prompt + self.start + self.consumed
            self.matcher.consume_tokens(token_ids[first:])
            self.consumed = have

    def _find_start(self, token_ids: list[int], num_prompt: int, num_output: int) -> bool:
        for i in range(self.scanned, num_output):
            if token_ids[num_prompt + i] == self.after:
                self.start = i + 1
                return True
        self.scanned = num_output
        return False
