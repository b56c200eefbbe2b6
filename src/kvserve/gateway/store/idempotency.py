"""Idempotency-Key holds in the store: one request runs per key, later ones get its answer."""

from __future__ import annotations

import logging

from kvserve.gateway.store.kvstore import Store
from kvserve.gateway.store.redis_link import RedisUnavailable
from kvserve.openai_error import OpenAIError

log = logging.getLogger("kvserve.gateway")
IN_PROGRESS = b"\x00in-progress"  # the value of a key whose request is running (never a JSON answer)


async def claim(store: Store, key: str, claim_s: float) -> tuple[bool, bytes | None]:
    """(True, None): this request took the key (it runs, its answer is kept); (False, answer):
    the answer of an earlier request with this key; (False, None): it runs without the key
    (the holder ended without an answer, or Redis is down). 409 while another request holds it."""
    try:
        stored = await store.get(key)
        if stored is None:
            if await store.claim(key, IN_PROGRESS, claim_s):
                return True, None
            stored = await store.get(key)  # taken in between by another request
    except RedisUnavailable:
        return False, None
    if stored == IN_PROGRESS:
        raise OpenAIError(409, "a request with this Idempotency-Key is still running; retry once it has finished",
                          code="idempotency_key_in_use")
    return False, stored


async def keep(store: Store, key: str, answer: bytes, ttl_s: float) -> None:
    await store.set(key, answer, ttl_s)


async def release(store: Store, key: str) -> None:
    """A request that took its key and leaves no answer frees it for a retry."""
    try:
        await store.delete(key)
    except RedisUnavailable:
        log.debug("idempotency key not released: redis down (it expires after idempotency_claim_s)")
