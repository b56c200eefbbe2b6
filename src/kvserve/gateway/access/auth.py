"""Client authentication: `Authorization: Bearer sk-kvs-...` -> the key's record.

The key's public id finds its record (in the keys file or in Redis, re-read every
`auth.cache_s`), then the SHA-256 of the presented key is compared with the stored one
in constant time. The key itself is never logged or kept.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Protocol

from kvserve.gateway.access.keys import KeyRecord, key_id_of, matches, read_keys_file, redis_keys_hash
from kvserve.gateway.store.redis_link import RedisLink, RedisUnavailable
from kvserve.openai_error import OpenAIError


class KeySource(Protocol):
    async def get(self, key_id: str) -> KeyRecord | None: ...

    def forget(self, key_id: str) -> None:
        """Drop what is cached of `key_id` (its record changed)."""


class FileKeys:
    """The YAML file written by `kvserve keys`, re-read when it changes (checked every `cache_s`)."""

    def __init__(self, path: Path, cache_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.cache_s, self.clock = Path(path), cache_s, clock
        self.records: dict[str, KeyRecord] = {}
        self.mtime: float | None = None
        self.checked = float("-inf")

    async def get(self, key_id: str) -> KeyRecord | None:
        now = self.clock()
        if now - self.checked >= self.cache_s:
            self.checked = now
            self._refresh()
        return self.records.get(key_id)

    def forget(self, key_id: str) -> None:
        self.checked = float("-inf")  # the whole file is re-read on the next lookup

    def _refresh(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            self.records, self.mtime = {}, None
            return
        if mtime != self.mtime:
            self.records, self.mtime = read_keys_file(self.path), mtime


class RedisKeys:
    """Records in the Redis hash `<prefix>:keys`, each cached for `cache_s` (stale ones are
    used while Redis is down)."""

    def __init__(self, link: RedisLink, cache_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.link, self.cache_s, self.clock = link, cache_s, clock
        self.name = redis_keys_hash(link.prefix)
        self.cached: dict[str, tuple[float, KeyRecord | None]] = {}

    async def get(self, key_id: str) -> KeyRecord | None:
        now = self.clock()
        hit = self.cached.get(key_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            raw = await self.link.call("auth", lambda: self.link.client.hget(self.name, key_id))
        except RedisUnavailable:
            if hit is not None:
                return hit[1]
            raise OpenAIError(503, "cannot check API keys right now", "service_unavailable", code="auth_unavailable") from None
        record = None if raw is None else KeyRecord.from_dict(json.loads(raw))
        if len(self.cached) > 100_000:
            self.cached.clear()
        self.cached[key_id] = (now + self.cache_s, record)
        return record

    def forget(self, key_id: str) -> None:
        self.cached.pop(key_id, None)


def invalid_key(message: str = "invalid API key") -> OpenAIError:
    return OpenAIError(401, message, "invalid_request_error", code="invalid_api_key")


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The credentials of `Authorization: Bearer <key>`; the scheme is case-insensitive (RFC 9110)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, key = value.strip().partition(b" ")
            return key.strip().decode("latin-1") if scheme.lower() == b"bearer" else None
    return None


async def authenticate(source: KeySource, headers: list[tuple[bytes, bytes]]) -> KeyRecord:
    """The record of the presented key; 401 when it is missing, unknown, wrong or revoked."""
    key = bearer(headers)
    if not key:
        raise invalid_key("missing API key: send 'Authorization: Bearer <key>'")
    key_id = key_id_of(key)
    record = None if key_id is None else await source.get(key_id)
    if record is None or not matches(key, record) or record.revoked:
        raise invalid_key()
    return record


def forbidden_model(model: str) -> OpenAIError:
    return OpenAIError(403, f"this API key may not use model '{model}'", "permission_error", param="model", code="model_not_allowed")
