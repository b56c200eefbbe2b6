"""N-gram prompt lookup: propose the tokens that followed the last time the request's
newest n tokens appeared earlier in its own prompt or output (no draft model).

Copy-heavy generations (repeat this list, edit this code, quote the document) repeat
long runs of their context, and a repeated run is predicted exactly. Plain Python.
"""

from __future__ import annotations


class NgramIndex:
    """One request's n-grams, n in [n_min, n_max], each mapped to where it last ended.

    Updated incrementally as tokens arrive (n_max dictionary writes per token), so that a
    lookup costs n_max dictionary reads whatever the length of the request. The n-grams
    ending at the newest token are indexed only once a later token arrives: a lookup of
    the newest suffix must find an earlier occurrence, not itself.
    """

    def __init__(self, n_min: int, n_max: int) -> None:
        self.n_min, self.n_max = n_min, n_max
        self.tokens: list[int] = []
        self._last_end: dict[tuple[int, ...], int] = {}  # n-gram -> index of its last token

    def extend(self, token_ids: list[int]) -> None:
        for token in token_ids:
            self._index_ending_at(len(self.tokens) - 1)
            self.tokens.append(token)

    def _index_ending_at(self, end: int) -> None:
        tokens = self.tokens
        for n in range(self.n_min, min(self.n_max, end + 1) + 1):
            self._last_end[tuple(tokens[end - n + 1:end + 1])] = end

    def propose(self, k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the longest
        matching suffix; [] when no suffix of n_min tokens or more occurred before."""
        tokens = self.tokens
        for n in range(min(self.n_max, len(tokens)), self.n_min - 1, -1):
            end = self._last_end.get(tuple(tokens[-n:]))
            if end is not None:
                return tokens[end + 1:end + 1 + k]
        return []
