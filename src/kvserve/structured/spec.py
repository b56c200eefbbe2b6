"""What a request asks of constrained decoding, as the engine receives it (picklable, no deps)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StructuredOutputs:
    """A grammar the output must follow, in llguidance's serialised form (see grammars.py).

    `after_token_id`: the grammar starts after the first output token with this id (Qwen3's
    `</think>`), so that reasoning before it is free text; None = from the first token.
    """

    grammar: str
    after_token_id: int | None = None
