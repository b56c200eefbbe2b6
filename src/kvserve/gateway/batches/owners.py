"""Who owns each file and job id, and the unfinished jobs of each tenant, in the gateway's
store (Redis when configured, so every gateway sees them; else in memory).

A tenant reaches only the ids recorded as its own: anything else is answered 404, as an id
that does not exist, so that one tenant cannot learn another's ids.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from kvserve.gateway.store.kvstore import Store


@dataclass(frozen=True)
class ActiveJob:
    id: str
    lines: int


class Owners:
    def __init__(self, store: Store, ttl_s: float) -> None:
        self.store, self.ttl_s = store, ttl_s

    async def claim(self, object_id: str, tenant: str) -> None:
        await self.store.set(f"batch:owner:{object_id}", tenant.encode(), self.ttl_s)

    async def owns(self, object_id: str, tenant: str) -> bool:
        return await self.store.get(f"batch:owner:{object_id}") == tenant.encode()

    async def forget(self, object_id: str) -> None:
        await self.store.delete(f"batch:owner:{object_id}")

    async def set_lines(self, file_id: str, lines: int) -> None:
        await self.store.set(f"batch:lines:{file_id}", str(lines).encode(), self.ttl_s)

    async def lines(self, file_id: str) -> int:
        raw = await self.store.get(f"batch:lines:{file_id}")
        return int(raw) if raw else 0

    async def active(self, tenant: str) -> list[ActiveJob]:
        raw = await self.store.get(f"batch:active:{tenant}")
        return [ActiveJob(**job) for job in json.loads(raw)] if raw else []

    async def set_active(self, tenant: str, jobs: list[ActiveJob]) -> None:
        await self.store.set(f"batch:active:{tenant}", json.dumps([asdict(j) for j in jobs]).encode(), self.ttl_s)
