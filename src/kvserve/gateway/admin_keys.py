"""Admin actions on API keys: list, create (the key is shown once), revoke.

They write the same store `kvserve keys` writes (the keys file or the Redis hash), then
make the gateway forget what it cached, so a new key works and a revoked key is refused
from the next request on rather than after `auth.cache_s`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kvserve.gateway.access.keys import FileKeyStore, KeyLimits, KeyRecord, KeyStore, RedisKeyStore, new_key
from kvserve.gateway.errors import bad_request, not_found
from kvserve.gateway.state import GatewayState
from kvserve.openai_error import OpenAIError

LIMIT_FIELDS = {"requests_per_minute", "tokens_per_minute", "concurrency", "max_tokens", "daily_tokens",
                "max_prompt_tokens", "max_messages", "max_body_bytes"}
MAX_TEXT = 128  # tenant, name and model names


class KeysAdmin:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def store(self) -> KeyStore:
        auth, redis = self.state.config.auth, self.state.config.redis
        if not auth.enabled:
            raise OpenAIError(409, "API keys are off in this gateway's config (auth.enabled: false)",
                              code="auth_disabled")
        if auth.store == "file":
            assert auth.keys_file is not None
            return FileKeyStore(auth.keys_file)
        assert redis.url is not None
        return RedisKeyStore(redis.url, redis.prefix)

    async def list(self, _: dict[str, Any]) -> dict[str, Any]:
        records = await asyncio.to_thread(self.store().all)
        return {"object": "list", "data": [public(r) for r in sorted(records, key=lambda r: r.created)]}

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        tenant = text_field(body, "tenant", required=True)
        name = text_field(body, "name")
        models = body.get("models") or []
        if not isinstance(models, list) or not all(isinstance(m, str) and 0 < len(m) <= MAX_TEXT for m in models):
            raise bad_request("'models' must be a list of model names", "models")
        priority = body.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise bad_request("'priority' must be an integer", "priority")
        key, record = new_key(tenant, tuple(models), priority, limits_of(body.get("limits") or {}), name)
        store = self.store()
        await asyncio.to_thread(store.put, record)
        self.state.backends.forget_key(record.key_id)  # usable from the next request on
        return {"key": key, **public(record)}

    async def revoke(self, body: dict[str, Any]) -> dict[str, Any]:
        key_id = text_field(body, "key_id", required=True)
        store = self.store()
        record = await asyncio.to_thread(store.get, key_id)
        if record is None:
            raise not_found(f"no key with id '{key_id}'", "key_id")
        revoked = KeyRecord(**{**record.__dict__, "revoked": True})
        await asyncio.to_thread(store.put, revoked)
        self.state.backends.forget_key(key_id)
        return public(revoked)


def public(record: KeyRecord) -> dict[str, Any]:
    """What the admin sees of a key: everything but its hash."""
    data = record.to_dict()
    data.pop("key_hash", None)
    return data


def text_field(body: dict[str, Any], name: str, required: bool = False) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or len(value) > MAX_TEXT or (required and not value.strip()):
        raise bad_request(f"'{name}' must be a {'non-empty ' if required else ''}string of at most {MAX_TEXT} "
                          "characters", name)
    return value.strip()


def limits_of(raw: Any) -> KeyLimits:
    if not isinstance(raw, dict) or set(raw) - LIMIT_FIELDS:
        raise bad_request(f"'limits' takes only {sorted(LIMIT_FIELDS)}", "limits")
    for field, value in raw.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise bad_request(f"limit '{field}' must be an integer >= 0", "limits")
    return KeyLimits(**{k: v for k, v in raw.items() if v is not None or k == "daily_tokens"})
