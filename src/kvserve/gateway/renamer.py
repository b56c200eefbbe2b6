"""Answers name the model the client asked for, not the name the upstream serves it under.

The upstream's JSON says `"model":"<upstream name>"` once per answer and once per SSE
chunk; the bytes are rewritten as they pass (no JSON parsing per chunk). A field split
across two reads is held back until the next read completes it.
"""

from __future__ import annotations

import json


class ModelRenamer:
    """Rewrites `"model":"<upstream>"` (with or without a space after the colon) into the client's name."""

    def __init__(self, upstream: str, client: str) -> None:
        old, new = json.dumps(upstream).encode(), json.dumps(client).encode()
        self.pairs = ((b'"model":' + old, b'"model":' + new), (b'"model": ' + old, b'"model": ' + new))
        self.longest = len(self.pairs[1][0])
        self.held = b""

    def __call__(self, data: bytes, last: bool) -> bytes:
        """The bytes to pass on now; the end of `data` may be held for the next call."""
        if self.held:
            data, self.held = self.held + data, b""
        for old, new in self.pairs:
            data = data.replace(old, new)
        if last or data.endswith(b"\n"):  # an SSE event ends there, never a field
            return data
        cut = self._partial_tail(data)
        if cut < len(data):
            data, self.held = data[:cut], data[cut:]
        return data

    def _partial_tail(self, data: bytes) -> int:
        """Where a field cut off by the end of `data` starts (len(data) when none is)."""
        start = max(0, len(data) - self.longest + 1)
        quote = data.find(b'"', start)
        while quote != -1:
            tail = data[quote:]
            if any(old.startswith(tail) for old, _ in self.pairs):
                return quote
            quote = data.find(b'"', quote + 1)
        return len(data)
