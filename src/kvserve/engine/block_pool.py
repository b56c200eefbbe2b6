"""The pool of KV blocks: reference counts, an LRU free queue, and the prefix-cache index.

Plain Python, no torch: block ids index the model runner's cache tensors, nothing more.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class BlockHash:
    """A full block's identity: a chained digest plus what it was computed from.

    `digest` covers the parent's digest, the block's tokens and the extra keys, so equal
    digests mean equal prefixes; `token_ids` and `parent` are kept so that a hit is
    verified rather than trusted.
    """

    digest: bytes
    parent: bytes | None
    token_ids: tuple[int, ...]


class KVCacheBlock:
    """One block of `block_size` token slots. `ref_cnt` counts the requests using it."""

    __slots__ = ("block_id", "ref_cnt", "block_hash")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash: BlockHash | None = None  # set once the block is full and cached

    def __repr__(self) -> str:
        return f"KVCacheBlock({self.block_id}, ref={self.ref_cnt}, cached={self.block_hash is not None})"


class BlockPool:
    """Owns every block. A block with ref_cnt 0 sits in the free queue (oldest first) and
    keeps its hash, so a later request can revive it until it is handed out again."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"a block pool needs at least one block, got {num_blocks}")
        self.blocks = [KVCacheBlock(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, KVCacheBlock] = OrderedDict((b.block_id, b) for b in self.blocks)
        self._cached: dict[bytes, KVCacheBlock] = {}  # digest -> block holding that prefix

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        return len(self._free)

    def usage(self) -> float:
        return 1.0 - self.num_free / self.num_blocks

    def lookup(self, block_hash: BlockHash) -> KVCacheBlock | None:
        """The cached block for this hash, if its contents really match."""
        block = self._cached.get(block_hash.digest)
        if block is None or block.block_hash != block_hash:
            return None
        return block

    def allocate(self, count: int) -> list[KVCacheBlock]:
        """Take `count` blocks from the front (least recently freed) of the free queue."""
        if count > self.num_free:
            raise RuntimeError(f"asked for {count} blocks with {self.num_free} free")
        taken = []
        for _ in range(count):
            _, block = self._free.popitem(last=False)
            self._evict_hash(block)
            block.ref_cnt = 1
            taken.append(block)
        return taken

    def touch(self, blocks: list[KVCacheBlock]) -> None:
        """Take a reference on cache-hit blocks, reviving those that were free."""
        for block in blocks:
            if block.ref_cnt == 0:
                del self._free[block.block_id]
            block.ref_cnt += 1

    def release(self, blocks: list[KVCacheBlock]) -> None:
        """Drop a reference; blocks reaching zero join the back of the free queue in the
        given order (callers pass a request's blocks tail first, so that the tail of a
        sequence is evicted before its more shareable head)."""
        for block in blocks:
            if block.ref_cnt <= 0:
                raise RuntimeError(f"double free of block {block.block_id}")
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                self._free[block.block_id] = block

    def cache(self, block: KVCacheBlock, block_hash: BlockHash) -> None:
        """Record that `block` holds the prefix `block_hash` (first writer wins)."""
        if block.block_hash is not None:
            return
        block.block_hash = block_hash
        self._cached.setdefault(block_hash.digest, block)

    def _evict_hash(self, block: KVCacheBlock) -> None:
        if block.block_hash is None:
            return
        if self._cached.get(block.block_hash.digest) is block:
            del self._cached[block.block_hash.digest]
        block.block_hash = None
