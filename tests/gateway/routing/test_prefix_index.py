"""Prefix index: chained chunk hashes and the per-endpoint longest match."""

from __future__ import annotations

from kvserve.gateway.routing.prefix_index import PrefixIndex, chunk_hashes


def test_hashes_are_chained_so_a_chunk_stands_for_its_whole_prefix():
    a = chunk_hashes("AAAABBBBCCCC", 4, 10)
    b = chunk_hashes("XXXXBBBBCCCC", 4, 10)
    assert len(a) == 3
    assert a[1] != b[1]  # same second chunk, different prefix
    assert chunk_hashes("AAAABBBBCC", 4, 10) == a[:2]  # a partial chunk is not hashed
    assert chunk_hashes("AAAABBBBCCCC", 4, 2) == a[:2]  # at most max_chunks


def test_match_counts_leading_chunks_per_endpoint():
    index = PrefixIndex(100)
    index.insert(chunk_hashes("AAAABBBBCCCC", 4, 10), "e1")
    index.insert(chunk_hashes("AAAABBBB", 4, 10), "e2")
    assert index.match(chunk_hashes("AAAABBBBCCCCDDDD", 4, 10)) == {"e1": 3, "e2": 2}
    assert index.match(chunk_hashes("ZZZZBBBB", 4, 10)) == {}


def test_least_recently_used_chunks_are_forgotten_first():
    index = PrefixIndex(4)
    old = chunk_hashes("AAAABBBB", 4, 10)
    index.insert(old, "e1")
    index.insert(chunk_hashes("CCCCDDDD", 4, 10), "e1")
    index.match(old)
    index.insert(old, "e1")  # refreshed
    index.insert(chunk_hashes("EEEEFFFF", 4, 10), "e2")
    assert index.match(old) == {"e1": 2}
    assert index.match(chunk_hashes("CCCCDDDD", 4, 10)) == {}
    assert len(index.entries) == 4
