"""API keys: generation, hashing, records, and the stores `kvserve keys` manages.

A key reads `sk-kvs-<id>-<secret>`. Only its SHA-256 is stored, next to the public
`id` that finds the record; the gateway then compares hashes with
`hmac.compare_digest`. Keys have 192 random bits, so a fast hash is enough (a slow
KDF protects low-entropy passwords, not random keys).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import redis

import yaml

KEY_PREFIX = "sk-kvs-"
ID_CHARS = 12  # hex characters of the public key id


@dataclass(frozen=True)
class KeyLimits:
    """Per-key limits; 0 (or None for the budget) means no limit."""

    requests_per_minute: int = 0
    tokens_per_minute: int = 0  # estimated prompt + max_tokens at admission, real usage after
    concurrency: int = 0  # requests open at once
    max_tokens: int = 0  # largest max_tokens a request may ask for (also the default it gets)
    daily_tokens: int | None = None  # token budget per UTC day
    max_prompt_tokens: int = 0  # estimated prompt tokens per request
    max_messages: int = 0  # messages per chat request
    max_body_bytes: int = 0  # request body size


@dataclass(frozen=True)
class KeyRecord:
    """What the gateway knows about a key (never the key itself)."""

    key_id: str
    key_hash: str  # sha256 hex of the whole key
    tenant: str
    models: tuple[str, ...] = ()  # allowed client-facing model names; empty = all
    priority: int = 0  # best priority the key may use (lower runs first)
    limits: KeyLimits = field(default_factory=KeyLimits)
    name: str = ""  # free-form label
    created: float = 0.0  # unix time
    revoked: bool = False

    def allows(self, model: str) -> bool:
        return not self.models or model in self.models

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"] = list(self.models)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyRecord:
        limits = KeyLimits(**(data.get("limits") or {}))
        return cls(**{**data, "models": tuple(data.get("models") or ()), "limits": limits})


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    """The public id inside a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX) or len(key) < len(KEY_PREFIX) + ID_CHARS + 2:
        return None
    key_id = key[len(KEY_PREFIX):len(KEY_PREFIX) + ID_CHARS]
    if key[len(KEY_PREFIX) + ID_CHARS] != "-":
        return None
    return key_id


def matches(key: str, record: KeyRecord) -> bool:
    """Constant-time check that `key` is the one `record` was made for."""
    return hmac.compare_digest(hash_key(key).encode(), record.key_hash.encode())


def new_key(tenant: str, models: tuple[str, ...] = (), priority: int = 0, limits: KeyLimits = KeyLimits(),
            name: str = "") -> tuple[str, KeyRecord]:
    """A fresh key (shown once) and its record."""
    key_id = secrets.token_hex(ID_CHARS // 2)
    key = f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(24)}"
    record = KeyRecord(key_id, hash_key(key), tenant, models, priority, limits, name, time.time())
    return key, record


class KeyStore(Protocol):
    """Where key records live (used by the CLI; the gateway reads through auth.py)."""

    def put(self, record: KeyRecord) -> None: ...

    def get(self, key_id: str) -> KeyRecord | None: ...

    def all(self) -> list[KeyRecord]: ...


def read_keys_file(path: Path) -> dict[str, KeyRecord]:
    """key id -> record; a missing file holds no keys."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return {}
    keys = data.get("keys") or {}
    return {key_id: KeyRecord.from_dict({**rec, "key_id": key_id}) for key_id, rec in keys.items()}


class FileKeyStore:
    """A YAML file (`keys: {id: record}`), replaced atomically on every write."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def put(self, record: KeyRecord) -> None:
        records = read_keys_file(self.path)
        records[record.key_id] = record
        body = {"keys": {k: {f: v for f, v in r.to_dict().items() if f != "key_id"} for k, r in records.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
        with os.fdopen(fd, "w") as out:
            yaml.safe_dump(body, out, sort_keys=True)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def get(self, key_id: str) -> KeyRecord | None:
        return read_keys_file(self.path).get(key_id)

    def all(self) -> list[KeyRecord]:
        return list(read_keys_file(self.path).values())


def redis_keys_hash(prefix: str) -> str:
    return f"{prefix}:keys"


class RedisKeyStore:
    """One Redis hash `<prefix>:keys`: key id -> JSON record (sync client, for the CLI)."""

    def __init__(self, url: str, prefix: str = "kvs") -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.name = redis_keys_hash(prefix)

    def put(self, record: KeyRecord) -> None:
        self.client.hset(self.name, record.key_id, json.dumps(record.to_dict()))

    def get(self, key_id: str) -> KeyRecord | None:
        raw = self.client.hget(self.name, key_id)
        return None if raw is None else KeyRecord.from_dict(json.loads(raw))

    def all(self) -> list[KeyRecord]:
        return [KeyRecord.from_dict(json.loads(v)) for v in self.client.hgetall(self.name).values()]
