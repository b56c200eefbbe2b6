"""Where rollouts are saved, so that a restarted gateway resumes them: Redis when the
gateway has one (every gateway on it sees them), else the process's memory."""

from __future__ import annotations

import json
from typing import Any, Protocol

from kvserve.gateway.store.redis_link import RedisLink


class RolloutStore(Protocol):
    async def load(self) -> list[dict[str, Any]]:
        """Every saved rollout record (raises RedisUnavailable when Redis is down)."""

    async def save(self, model: str, record: dict[str, Any]) -> None:
        """Replace the record of `model`'s rollout (raises RedisUnavailable when Redis is down)."""


class MemoryRollouts:
    def __init__(self) -> None:
        self.records: dict[str, str] = {}

    async def load(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.records.values()]

    async def save(self, model: str, record: dict[str, Any]) -> None:
        self.records[model] = json.dumps(record)


class RedisRollouts:
    """One Redis hash, `<prefix>:rollouts`: model -> its rollout as JSON."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.key = link.key("rollouts")

    async def load(self) -> list[dict[str, Any]]:
        raw = await self.link.call("rollouts_load", lambda: self.link.client.hgetall(self.key))
        records = []
        for value in raw.values():
            try:
                records.append(json.loads(value))
            except ValueError:
                continue  # not ours to fix; the controller logs what it cannot restore
        return records

    async def save(self, model: str, record: dict[str, Any]) -> None:
        data = json.dumps(record)
        await self.link.call("rollouts_save", lambda: self.link.client.hset(self.key, model, data))
