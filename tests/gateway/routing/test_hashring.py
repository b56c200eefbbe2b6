"""Consistent hash ring."""

from __future__ import annotations

from collections import Counter

from kvserve.gateway.routing.hashring import HashRing, stable_hash


def test_stable_hash_is_the_same_in_every_process():
    # a fixed value: Python's hash() would change with PYTHONHASHSEED
    assert stable_hash("session-42") == stable_hash("session-42")
    assert stable_hash("session-42") == int.from_bytes(
        __import__("hashlib").blake2b(b"session-42", digest_size=8).digest(), "big")


def test_keys_spread_over_members_and_skip_unavailable_ones():
    ring = HashRing(["a", "b", "c"], 128)
    owners = Counter(ring.lookup(f"k{i}", {"a", "b", "c"}) for i in range(3000))
    assert all(800 < owners[m] < 1200 for m in "abc"), owners
    assert {ring.lookup(f"k{i}", {"a"}) for i in range(50)} == {"a"}
    assert ring.lookup("k", set()) is None
