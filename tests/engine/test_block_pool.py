import pytest

from kvserve.engine.block_pool import BlockPool
from kvserve.engine.kv_cache_manager import hash_block


def test_allocates_least_recently_freed_first():
    pool = BlockPool(4)
    a, b, c, d = pool.allocate(4)
    assert pool.num_free == 0
    pool.release([c, a])  # freed in this order
    assert [blk.block_id for blk in pool.allocate(2)] == [c.block_id, a.block_id]


def test_freed_block_keeps_its_hash_until_reused():
    pool = BlockPool(2)
    (block,) = pool.allocate(1)
    h = hash_block(None, (1, 2, 3, 4), None)
    pool.cache(block, h)
    pool.release([block])
    assert pool.lookup(h) is block  # revivable while free
    pool.touch([block])
    assert block.ref_cnt == 1 and pool.num_free == 1
    pool.release([block])
    pool.allocate(2)  # both free blocks reused: the cached one loses its hash
    assert pool.lookup(h) is None


def test_lookup_verifies_tokens_not_just_digest():
    pool = BlockPool(1)
    (block,) = pool.allocate(1)
    real = hash_block(None, (1, 2), None)
    pool.cache(block, real)
    forged = type(real)(real.digest, real.parent, (9, 9))  # same digest, other tokens
    assert pool.lookup(forged) is None
    assert pool.lookup(real) is block


def test_double_free_is_an_error():
    pool = BlockPool(1)
    (block,) = pool.allocate(1)
    pool.release([block])
    with pytest.raises(RuntimeError, match="double free"):
        pool.release([block])


def test_hash_chains_on_parent_and_extra_keys():
    h1 = hash_block(None, (1, 2), None)
    assert hash_block(h1, (3, 4), None) != hash_block(None, (3, 4), None)
    assert hash_block(None, (1, 2), "tenant-a") != hash_block(None, (1, 2), "tenant-b")
    assert hash_block(None, (1, 2), None) == h1
