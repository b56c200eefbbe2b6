"""What each endpoint has recently seen: chained hashes of prompts' leading chunks."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence


def chunk_hashes(text: str, chunk_chars: int, max_chunks: int) -> list[int]:
    """Chained hashes of the leading full chunks: h_i = hash((h_{i-1}, chunk_i)).

    Chaining makes h_i stand for the whole prefix up to chunk i, as the engine's block
    hashes do; a partial trailing chunk is not hashed. Python's string hash is salted
    per process, which is fine for an index that lives in one process.
    """
    end = min(len(text), chunk_chars * max_chunks)
    hashes: list[int] = []
    h = 0
    for start in range(0, end - chunk_chars + 1, chunk_chars):
        h = hash((h, text[start : start + chunk_chars]))
        hashes.append(h)
    return hashes


class PrefixIndex:
    """LRU map from a chunk hash to the endpoints that were sent a prompt containing it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[int, dict[str, None]] = OrderedDict()  # hash -> ordered set of URLs

    def match(self, hashes: Sequence[int]) -> dict[str, int]:
        """For each endpoint, how many leading chunks of `hashes` it has seen (absent = 0)."""
        lengths: dict[str, int] = {}
        for i, h in enumerate(hashes):
            owners = self.entries.get(h)
            advanced = False
            for url in owners or ():
                if lengths.get(url, 0) == i:
                    lengths[url] = i + 1
                    advanced = True
            if not advanced:
                break
        return lengths

    def insert(self, hashes: Sequence[int], url: str) -> None:
        entries = self.entries
        for h in hashes:
            owners = entries.get(h)
            if owners is None:
                entries[h] = {url: None}
            else:
                entries.move_to_end(h)
                owners[url] = None
        while len(entries) > self.capacity:
            entries.popitem(last=False)
