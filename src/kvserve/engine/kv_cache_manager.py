"""Per-request block tables on top of the block pool, with prefix caching.

The scheduler asks three things: which leading blocks of a new request are already
computed (`get_computed_blocks`), to make room for a step's tokens (`allocate_slots`),
and to give a request's blocks back (`free`). Plain Python, no torch.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field

from kvserve.engine.block_pool import BlockHash, BlockPool, KVCacheBlock
from kvserve.engine.request import Request


def hash_block(parent: BlockHash | None, token_ids: tuple[int, ...], extra: str | None) -> BlockHash:
    """h_i = SHA-256(h_{i-1}, tokens of block i, extra keys) — collision-resistant by design,
    and verified against the stored tokens on every hit anyway."""
    h = hashlib.sha256()
    parent_digest = parent.digest if parent else None
    h.update(parent_digest or b"\0root")
    h.update(array("q", token_ids).tobytes())
    if extra:
        h.update(b"\0extra" + extra.encode())
    return BlockHash(h.digest(), parent_digest, token_ids)


@dataclass
class PrefixCacheStats:
    queries: int = 0  # prompt tokens looked up
    hits: int = 0  # of those, tokens found computed

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0


@dataclass
class _RequestBlocks:
    blocks: list[KVCacheBlock] = field(default_factory=list)
    num_cached_blocks: int = 0  # leading blocks registered in the prefix cache


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.pool = BlockPool(num_blocks)
        self.stats = PrefixCacheStats()
        self._reqs: dict[str, _RequestBlocks] = {}

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    def usage(self) -> float:
        return self.pool.usage()

    def block_ids(self, request_id: str) -> list[int]:
        return [b.block_id for b in self._reqs[request_id].blocks] if request_id in self._reqs else []

    def get_computed_blocks(self, request: Request) -> tuple[list[KVCacheBlock], int]:
        """Leading blocks of `request` already in the cache, and the tokens they cover.

        At least the last token is always left to compute, since its logits are needed.
        """
        if not self.enable_prefix_caching:
            return [], 0
        hashes = self._block_hashes(request)
        max_hit_blocks = (request.num_tokens - 1) // self.block_size
        hits = []
        for block_hash in hashes[:max_hit_blocks]:
            block = self.pool.lookup(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits, len(hits) * self.block_size

    def record_lookup(self, num_tokens: int, num_hit_tokens: int) -> None:
        """Count one admitted request's prefix lookup in the hit-rate statistics."""
        if self.enable_prefix_caching:
            self.stats.queries += num_tokens
            self.stats.hits += num_hit_tokens

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free

    def blocks_needed(self, request: Request, num_new_tokens: int, computed_blocks: list[KVCacheBlock] = ()) -> int:
        """Free blocks that `allocate_slots` would take for these tokens (nothing is changed):
        the blocks the request lacks, and prefix hits it would revive from the free queue."""
        _, num_new_blocks = self._extent(request, num_new_tokens, computed_blocks)
        return num_new_blocks + _num_revived(computed_blocks)

    def allocate_slots(
        self, request: Request, num_new_tokens: int, computed_blocks: list[KVCacheBlock] | None = None
    ) -> list[int] | None:
        """Make room for `num_new_tokens` more tokens after the computed ones.

        `computed_blocks` (admission only) are prefix hits that become the head of the
        block table; they count as computed. Returns the ids of newly added blocks, or None when the pool is
        too small right now (nothing is changed then).
        """
        computed_blocks = computed_blocks or []
        total, num_new_blocks = self._extent(request, num_new_tokens, computed_blocks)
        if num_new_blocks + _num_revived(computed_blocks) > self.pool.num_free:
            return None
        state = self._reqs.setdefault(request.request_id, _RequestBlocks())
        self.pool.touch(computed_blocks)
        state.blocks.extend(computed_blocks)
        state.num_cached_blocks = max(state.num_cached_blocks, len(computed_blocks))
        new_blocks = self.pool.allocate(num_new_blocks)
        state.blocks.extend(new_blocks)
        self._cache_full_blocks(request, state, total)
        return [b.block_id for b in computed_blocks + new_blocks]

    def _extent(self, request: Request, num_new_tokens: int, computed_blocks: list[KVCacheBlock]) -> tuple[int, int]:
        """(tokens the request will span, blocks it lacks for them)."""
        state = self._reqs.get(request.request_id)
        num_held = len(state.blocks) if state is not None else 0
        total = request.num_computed_tokens + len(computed_blocks) * self.block_size + num_new_tokens
        return total, max(-(-total // self.block_size) - num_held - len(computed_blocks), 0)

    def free(self, request: Request) -> None:
        state = self._reqs.pop(request.request_id, None)
        if state is not None:
            self.pool.release(list(reversed(state.blocks)))

    def _block_hashes(self, request: Request) -> list[BlockHash]:
        """Chained hashes of the request's full blocks, kept on the request (they stay
        valid across preemption) and extended as its tokens grow."""
        bs = self.block_size
        hashes = request.block_hashes
        tokens = request.all_token_ids
        while (len(hashes) + 1) * bs <= len(tokens):
            i = len(hashes)
            parent = hashes[-1] if hashes else None
            hashes.append(hash_block(parent, tuple(tokens[i * bs:(i + 1) * bs]), request.cache_salt))
        return hashes

    def _cache_full_blocks(self, request: Request, state: _RequestBlocks, num_tokens: int) -> None:
        """Register blocks that this step fills completely. A block is cached when it is
        scheduled: every layer writes a step's K/V before attending, so a request sharing
        the block in the same step reads values written in that same step."""
        if not self.enable_prefix_caching:
            return
        num_full = min(num_tokens, request.num_tokens) // self.block_size
        if num_full <= state.num_cached_blocks:
            return
        hashes = self._block_hashes(request)
        for i in range(state.num_cached_blocks, num_full):
            self.pool.cache(state.blocks[i], hashes[i])
        state.num_cached_blocks = num_full


def _num_revived(computed_blocks: list[KVCacheBlock]) -> int:
    """Prefix hits that sit in the free queue: taking them takes free blocks."""
    return sum(1 for b in computed_blocks if b.ref_cnt == 0)
