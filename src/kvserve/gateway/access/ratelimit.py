"""Rate limits, concurrency, daily budgets and usage: the contract and the in-memory backend.

Requests/min and tokens/min are token buckets that refill in a minute (capacity = the
limit, so `reset` is the time until the bucket is full again, as in OpenAI's headers).
Admission charges the estimated prompt tokens plus max_tokens; `settle` replaces that
estimate with the real usage, frees the concurrency slot and adds to the usage totals.
`MemoryLimiter` serves one gateway; `RedisLimiter` (ratelimit_redis.py) runs the same
rules as two Lua scripts, so gateways sharing a Redis share the limits.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Protocol

from kvserve.gateway.access.keys import KeyLimits
from kvserve.gateway.access_config import TenantLimits
from kvserve.openai_error import OpenAIError

DAY_S = 86400
BUCKET_S = 60.0
# refusal codes shared with the Lua script
REASONS = {1: "concurrency", 2: "requests", 3: "tokens", 4: "tenant_requests", 5: "tenant_tokens",
           6: "daily_budget", 7: "request_too_large"}


@dataclass
class Charge:
    """One request's admission: who pays, what limits apply, the estimated cost."""

    key_id: str
    tenant: str
    model: str
    slot: str  # unique per admission: the concurrency slot's name
    tokens: int  # estimated prompt tokens + max_tokens
    limits: KeyLimits = field(default_factory=KeyLimits)
    tenant_limits: TenantLimits = field(default_factory=TenantLimits)

    @property
    def limited(self) -> bool:
        k, t = self.limits, self.tenant_limits
        return bool(k.requests_per_minute or k.tokens_per_minute or k.concurrency or k.daily_tokens is not None
                    or t.requests_per_minute or t.tokens_per_minute)


@dataclass
class Decision:
    """The admission verdict and what the x-ratelimit-* headers report (per key)."""

    code: int = 0  # 0 admitted, else a key of REASONS
    remaining_requests: int = 0
    remaining_tokens: int = 0
    reset_requests_s: float = 0.0
    reset_tokens_s: float = 0.0
    retry_after_s: float = 0.0
    day: int = 0  # UTC day of admission (the budget the estimate went to)
    enforced: bool = True  # False: Redis was down and the gateway failed open

    @property
    def admitted(self) -> bool:
        return self.code == 0


@dataclass
class Usage:
    """What a finished request used (billed tokens are 0 on a cache hit)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hit: bool = False

    @property
    def billed(self) -> int:
        return 0 if self.cache_hit else self.prompt_tokens + self.completion_tokens


class Limiter(Protocol):
    async def admit(self, charge: Charge) -> Decision: ...

    async def settle(self, charge: Charge, decision: Decision, usage: Usage) -> None: ...

    async def usage(self) -> list[dict[str, object]]: ...

    async def close(self) -> None: ...


class Bucket:
    """A token bucket refilled to `cap` over BUCKET_S seconds; may go negative after settling."""

    def __init__(self, cap: int, now: float) -> None:
        self.level, self.at = float(cap), now

    def refill(self, cap: int, now: float) -> float:
        self.level = min(cap, self.level + (now - self.at) * cap / BUCKET_S)
        self.at = now
        return self.level


def seconds_to(need: float, have: float, cap: int) -> float:
    return max(0.0, (need - have) * BUCKET_S / cap) if cap > 0 else 0.0


class MemoryLimiter:
    """All limits in this process (a single gateway without Redis)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.buckets: dict[tuple[str, str, str], Bucket] = {}
        self.open: dict[str, set[str]] = defaultdict(set)
        self.daily: dict[str, tuple[int, int]] = {}  # key id -> (day, tokens used)
        self.totals: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])

    def _bucket(self, scope: str, name: str, kind: str, cap: int, now: float) -> float:
        bucket = self.buckets.setdefault((scope, name, kind), Bucket(cap, now))
        return bucket.refill(cap, now)

    async def admit(self, charge: Charge) -> Decision:
        now, k, t = self.clock(), charge.limits, charge.tenant_limits
        day = int(now // DAY_S)
        levels = [self._bucket("key", charge.key_id, "r", k.requests_per_minute, now),
                  self._bucket("key", charge.key_id, "t", k.tokens_per_minute, now),
                  self._bucket("tenant", charge.tenant, "r", t.requests_per_minute, now),
                  self._bucket("tenant", charge.tenant, "t", t.tokens_per_minute, now)]
        caps = [k.requests_per_minute, k.tokens_per_minute, t.requests_per_minute, t.tokens_per_minute]
        costs = [1, charge.tokens, 1, charge.tokens]
        last_day, used = self.daily.get(charge.key_id, (day, 0))
        used_day = used if last_day == day else 0
        code, retry = 0, 0.0
        if (caps[1] and charge.tokens > caps[1]) or (caps[3] and charge.tokens > caps[3]):
            code = 7
        elif k.concurrency and len(self.open[charge.key_id]) >= k.concurrency:
            code, retry = 1, 1.0
        else:
            for i in range(4):
                if caps[i] and levels[i] < costs[i]:
                    code, retry = (2, 3, 4, 5)[i], seconds_to(costs[i], levels[i], caps[i])
                    break
        if code == 0 and k.daily_tokens is not None and used_day >= k.daily_tokens:
            code, retry = 6, (day + 1) * DAY_S - now
        if code == 0:
            self._take(charge, levels, costs, caps, day, used_day)
        return Decision(code, int(levels[0]) - (code == 0), int(levels[1]) - (charge.tokens if code == 0 else 0),
                        seconds_to(caps[0], levels[0] - (code == 0), caps[0]),
                        seconds_to(caps[1], levels[1] - (charge.tokens if code == 0 else 0), caps[1]),
                        retry, day)

    def _take(self, charge: Charge, levels: list[float], costs: list[int], caps: list[int], day: int,
              used_day: int) -> None:
        names = [("key", charge.key_id, "r"), ("key", charge.key_id, "t"), ("tenant", charge.tenant, "r"),
                 ("tenant", charge.tenant, "t")]
        for name, cap, cost in zip(names, caps, costs):
            if cap:
                self.buckets[name].level -= cost
        if charge.limits.concurrency:
            self.open[charge.key_id].add(charge.slot)
        if charge.limits.daily_tokens is not None:
            self.daily[charge.key_id] = (day, used_day + charge.tokens)

    async def settle(self, charge: Charge, decision: Decision, usage: Usage) -> None:
        delta = usage.billed - (charge.tokens if decision.admitted and charge.limited else 0)
        now = self.clock()
        for scope, name, cap in (("key", charge.key_id, charge.limits.tokens_per_minute),
                                 ("tenant", charge.tenant, charge.tenant_limits.tokens_per_minute)):
            if cap and (bucket := self.buckets.get((scope, name, "t"))) is not None:
                bucket.refill(cap, now)
                bucket.level = min(cap, bucket.level - delta)
        self.open[charge.key_id].discard(charge.slot)
        day, used = self.daily.get(charge.key_id, (-1, 0))
        if day == decision.day:
            self.daily[charge.key_id] = (day, used + delta)
        row = self.totals[(charge.tenant, charge.key_id, charge.model)]
        row[0] += 1
        row[1] += usage.prompt_tokens
        row[2] += usage.completion_tokens
        row[3] += usage.cache_hit

    async def usage(self) -> list[dict[str, object]]:
        return [usage_row(tenant, key_id, model, *row) for (tenant, key_id, model), row in self.totals.items()]

    async def close(self) -> None:
        return None


def usage_row(tenant: str, key_id: str, model: str, requests: int, prompt: int, completion: int,
              hits: int) -> dict[str, object]:
    return {"tenant": tenant, "key_id": key_id, "model": model, "requests": requests, "prompt_tokens": prompt,
            "completion_tokens": completion, "cache_hits": hits}


def refusal(charge: Charge, decision: Decision) -> OpenAIError:
    """The 429 for a refused admission, with Retry-After and the x-ratelimit-* headers."""
    reason = REASONS[decision.code]
    messages = {
        "concurrency": f"too many concurrent requests for this key (limit {charge.limits.concurrency})",
        "requests": f"rate limit of {charge.limits.requests_per_minute} requests per minute reached",
        "tokens": f"rate limit of {charge.limits.tokens_per_minute} tokens per minute reached",
        "tenant_requests": f"tenant '{charge.tenant}' reached its {charge.tenant_limits.requests_per_minute} "
                           "requests per minute",
        "tenant_tokens": f"tenant '{charge.tenant}' reached its {charge.tenant_limits.tokens_per_minute} "
                         "tokens per minute",
        "daily_budget": f"daily token budget of {charge.limits.daily_tokens} tokens is spent; it renews at "
                        "00:00 UTC",
        "request_too_large": f"this request may use {charge.tokens} tokens, more than a minute's limit; "
                             "lower max_tokens",
    }
    headers = {"retry-after": str(max(1, math.ceil(decision.retry_after_s)))}
    headers.update((k.decode(), v.decode()) for k, v in limit_headers(charge, decision))
    code = "insufficient_quota" if reason == "daily_budget" else "rate_limit_exceeded"
    return OpenAIError(429, messages[reason], "rate_limit_error" if code != "insufficient_quota"
                        else "insufficient_quota", code=code, headers=headers)


def limit_headers(charge: Charge, decision: Decision) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers for the key's own request and token limits."""
    if not decision.enforced:
        return []
    out = []
    for kind, limit, remaining, reset in (
            ("requests", charge.limits.requests_per_minute, decision.remaining_requests, decision.reset_requests_s),
            ("tokens", charge.limits.tokens_per_minute, decision.remaining_tokens, decision.reset_tokens_s)):
        if limit:
            out += [(b"x-ratelimit-limit-" + kind.encode(), str(limit).encode()),
                    (b"x-ratelimit-remaining-" + kind.encode(), str(max(0, remaining)).encode()),
                    (b"x-ratelimit-reset-" + kind.encode(), f"{reset:.3f}s".encode())]
    return out
