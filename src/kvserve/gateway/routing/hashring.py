"""Consistent hashing with virtual nodes, for session affinity."""

from __future__ import annotations

import bisect
import hashlib
from typing import Collection, Iterable


def stable_hash(key: str) -> int:
    """A 64-bit hash that is the same in every process (unlike hash()), so that several
    gateway replicas send one session to the same endpoint."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Each member owns `virtual_nodes` points on a ring; a key belongs to the first
    available member clockwise from its hash. When a member leaves, only its keys move."""

    def __init__(self, members: Iterable[str], virtual_nodes: int) -> None:
        self.members = frozenset(members)
        points = sorted((stable_hash(f"{m}#{i}"), m) for m in self.members for i in range(virtual_nodes))
        self._points = [p for p, _ in points]
        self._owners = [m for _, m in points]

    def lookup(self, key: str, available: Collection[str]) -> str | None:
        """The owner of `key` among `available` members (None if none is on the ring)."""
        n = len(self._points)
        start = bisect.bisect(self._points, stable_hash(key))
        for step in range(n):
            owner = self._owners[(start + step) % n]
            if owner in available:
                return owner
        return None
