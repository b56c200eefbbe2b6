"""Engine logprobs (per position: token id -> Logprob) in the two OpenAI response shapes."""

from __future__ import annotations

from kvserve.outputs import Logprob, PositionLogprobs
from kvserve.server.responses import CompletionLogprobs, TokenLogprob, TopLogprob

FLOOR = -9999.0  # JSON has no -inf; OpenAI clients expect a number


def _value(entry: Logprob) -> float:
    return max(entry.logprob, FLOOR)


def _top(position: PositionLogprobs, top_n: int) -> list[tuple[int, Logprob]]:
    ranked = sorted(position.items(), key=lambda item: item[1].rank or 0)
    return [(tid, lp) for tid, lp in ranked if lp.rank is not None and lp.rank <= top_n][:top_n]


def _piece(token_id: int, entry: Logprob) -> str:
    return entry.decoded_token if entry.decoded_token is not None else str(token_id)


def chat_entries(token_ids: list[int], positions: list[PositionLogprobs], top_n: int) -> list[TokenLogprob]:
    entries = []
    for token_id, position in zip(token_ids, positions):
        sampled = position[token_id]
        piece = _piece(token_id, sampled)
        top = [
            TopLogprob(token=_piece(tid, lp), logprob=_value(lp), bytes=list(_piece(tid, lp).encode()))
            for tid, lp in _top(position, top_n)
        ]
        entries.append(TokenLogprob(token=piece, logprob=_value(sampled), bytes=list(piece.encode()), top_logprobs=top))
    return entries


def add_completion_entries(out: CompletionLogprobs, token_ids: list[int], positions: list[PositionLogprobs],
                           top_n: int, text_offset: int) -> int:
    """Append to `out`; returns the text offset after the new tokens."""
    for token_id, position in zip(token_ids, positions):
        sampled = position[token_id]
        piece = _piece(token_id, sampled)
        out.tokens.append(piece)
        out.token_logprobs.append(_value(sampled))
        out.top_logprobs.append({_piece(tid, lp): _value(lp) for tid, lp in _top(position, top_n)})
        out.text_offset.append(text_offset)
        text_offset += len(piece)
    return text_offset
