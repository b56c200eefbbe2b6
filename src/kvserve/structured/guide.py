"""One request's walk through its grammar: which output tokens the matcher has taken so far."""

from __future__ import annotations

import llguidance
import numpy as np

from kvserve.structured.spec import StructuredOutputs


class Guide:
    """Follows a request's output tokens through a matcher.

    The runner's token list is the truth: `catch_up` feeds the matcher whatever output the
    list holds that it has not seen, and rolls back what the list no longer holds (a token
    dropped when its request was preempted), so the guide survives preemption unchanged.
    `take` follows one token more without the list (the mask job, before the token reaches
    it). With `after_token_id` the grammar starts after that token's first occurrence.
    """

    def __init__(self, matcher: llguidance.LLMatcher, spec: StructuredOutputs, end_tokens: list[int],
                 group: int = 0) -> None:
        self.matcher = matcher
        self.group = group  # the compile it is a copy of (GrammarCompiler): masks are filled grouped
        self.after = spec.after_token_id
        self.start: int | None = 0 if self.after is None else None  # output index where the grammar starts
        self.scanned = 0  # output tokens searched for `after` so far
        self.consumed = 0  # output tokens (from `start`) the matcher has taken
        self.end_tokens = np.asarray(end_tokens, dtype=np.int64)  # allowed wherever EOS is (the request's ends)
        self.ready = -1  # the step (GuideTable's serial) whose mask row the mask job wrote for this guide
        self.row: int | None = None  # ... that row of the step's host bitmask; None = unconstrained

    @property
    def seen(self) -> int:
        """Output tokens followed so far."""
        return self.scanned if self.start is None else self.start + self.consumed

    def take(self, token: int) -> bool:
        """Follow the next output token; True if the matcher must consume it (the caller
        batches the consumption: consume_token_par)."""
        if self.start is None:
            self.scanned += 1
            if token == self.after:
                self.start = self.scanned
            return False
        self.consumed += 1
        return True

    def catch_up(self, token_ids: list[int], num_prompt: int) -> None:
        """Bring the matcher to the end of the output `token_ids[num_prompt:]`."""
        num_output = len(token_ids) - num_prompt
        if self.start is not None and num_output < self.start:  # dropped back past `after`: search again
            self.matcher.reset()
            self.start, self.consumed, self.scanned = None, 0, 0
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
        for i in range(min(self.scanned, num_output), num_output):
            if token_ids[num_prompt + i] == self.after:
                self.start = i + 1
                self.scanned = self.start
                return True
        self.scanned = num_output
        return False
