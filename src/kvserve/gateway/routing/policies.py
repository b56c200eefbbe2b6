"""Routing policies: plain functions of a stats snapshot and a request, picked by name.

Every policy has the signature `(snapshot, request, state) -> url`. The snapshot holds
only endpoints that may take traffic now (at least one); `state` is the pool's memory
between requests (a counter, an RNG, the prefix index, the hash ring).

Load model. The gateway's view of an endpoint's load is the engine's own count at the
last scrape (waiting + running) corrected by how this gateway's in-flight count on it
changed since, and never below that in-flight count. Stale stats are unknown, not
idle: such an endpoint is assumed as busy as the known ones on average.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from kvserve.gateway.routing.hashring import HashRing
from kvserve.gateway.routing.prefix_index import PrefixIndex, chunk_hashes
from kvserve.gateway.routing.stats import EndpointStats


class PolicyOptions(BaseModel):
    """Knobs of the policies (the `options` of a pool in the config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prefix_chunk_chars: int = Field(256, gt=0)  # prefix_aware: characters per hashed prompt chunk
    prefix_max_chunks: int = Field(64, gt=0)  # prefix_aware: leading chunks hashed per request
    prefix_lru_entries: int = Field(100_000, gt=0)  # prefix_aware: chunk hashes remembered per pool
    prefix_max_imbalance: float = Field(8.0, ge=0)  # prefix_aware: extra load tolerated for a prefix hit
    virtual_nodes: int = Field(128, gt=0)  # session_affinity: ring points per endpoint
    queue_weight: float = Field(1.0, ge=0)  # kv_aware: weight of the normalised queue length
    kv_weight: float = Field(1.0, ge=0)  # kv_aware: weight of KV-cache usage (0..1)


@dataclass(frozen=True)
class RouteRequest:
    """What a policy knows of a request."""

    prompt: str = ""  # the prompt's text, for prefix hashing (never logged)
    session_key: str | None = None  # session header or `user` field
    est_prompt_tokens: int = 0


@dataclass
class PolicyState:
    """A pool's policy memory between requests."""

    options: PolicyOptions = field(default_factory=PolicyOptions)
    rng: random.Random = field(default_factory=random.Random)
    counter: int = 0
    prefix: PrefixIndex | None = None
    ring: HashRing | None = None

    def prefix_index(self) -> PrefixIndex:
        if self.prefix is None:
            self.prefix = PrefixIndex(self.options.prefix_lru_entries)
        return self.prefix


Snapshot = Sequence[EndpointStats]
Policy = Callable[[Snapshot, RouteRequest, PolicyState], str]


def endpoint_load(stats: EndpointStats) -> float | None:
    """Estimated requests on the endpoint now; None when its stats are unknown."""
    engine = stats.engine
    if engine is None:
        return None
    drift = stats.in_flight - engine.in_flight_at_scrape
    return max(float(stats.in_flight), engine.waiting + engine.running + drift)


def loads(snapshot: Snapshot) -> list[float]:
    """endpoint_load for each endpoint, unknown ones filled with the known mean."""
    known = [endpoint_load(s) for s in snapshot]
    values = [v for v in known if v is not None]
    mean = sum(values) / len(values) if values else 0.0
    return [max(float(s.in_flight), mean) if v is None else v for s, v in zip(snapshot, known)]


def argmin_rotating(costs: Sequence[float], state: PolicyState) -> int:
    """Index of the lowest cost; ties take turns so equal endpoints share traffic."""
    low = min(costs)
    ties = [i for i, cost in enumerate(costs) if cost == low]
    state.counter += 1
    return ties[state.counter % len(ties)]


def round_robin(snapshot: Snapshot, request: RouteRequest, state: PolicyState) -> str:
    state.counter += 1
    return snapshot[state.counter % len(snapshot)].url


def least_request(snapshot: Snapshot, request: RouteRequest, state: PolicyState) -> str:
    return snapshot[argmin_rotating(loads(snapshot), state)].url


def power_of_two(snapshot: Snapshot, request: RouteRequest, state: PolicyState) -> str:
    if len(snapshot) == 1:
        return snapshot[0].url
    a, b = state.rng.sample(range(len(snapshot)), 2)
    la, lb = endpoint_load(snapshot[a]), endpoint_load(snapshot[b])
    if la is None or lb is None:  # unknown stats: compare what the gateway itself sees
        la, lb = snapshot[a].in_flight, snapshot[b].in_flight
    return snapshot[b if lb < la else a].url


def kv_aware(snapshot: Snapshot, request: RouteRequest, state: PolicyState) -> str:
    """Lowest queue_weight * load / max load + kv_weight * KV usage."""
    load = loads(snapshot)
    top = max(1.0, max(load))
    kv = [s.engine.kv_usage if s.engine is not None else None for s in snapshot]
    known = [k for k in kv if k is not None]
    mean_kv = sum(known) / len(known) if known else 0.0
    options = state.options
    costs = [
        options.queue_weight * q / top + options.kv_weight * (mean_kv if k is None else k)
        for q, k in zip(load, kv)
    ]
    return snapshot[argmin_rotating(costs, state)].url


def prefix_aware(snapshot: Snapshot, request: RouteRequest, state: PolicyState) -> str:
    """The endpoint that has seen the longest leading part of the prompt, unless it is
    busier than the least loaded one by more than prefix_max_imbalance requests."""
    options = state.options
    load = loads(snapshot)
    choice = argmin_rotating(load, state)
    hashes = chunk_hashes(request.prompt, options.prefix_chunk_chars, options.prefix_max_chunks)
    index = state.prefix_index()
    matched = index.match(hashes)
    if matched:
        best = max(range(len(snapshot)), key=lambda i: (matched.get(snapshot[i].url, 0), -load[i]))
        if matched.get(snapshot[best].url, 0) and load[best] <= load[choice] + options.prefix_max_imbalance:
            choice = best
    url = snapshot[choice].url
    index.insert(hashes, url)
    return url


def session_affinity(snapshot: Snapshot, request: RouteRequest, state: PolicyState) -> str:
    """Consistent hashing of the session key; requests without one go to the least loaded."""
    if request.session_key is None:
        return least_request(snapshot, request, state)
    urls = {s.url for s in snapshot}
    if state.ring is None or not urls <= state.ring.members:
        members = urls | (state.ring.members if state.ring is not None else frozenset())
        state.ring = HashRing(members, state.options.virtual_nodes)
    return state.ring.lookup(request.session_key, urls) or snapshot[0].url


POLICIES: dict[str, Policy] = {
    "round_robin": round_robin,
    "least_request": least_request,
    "power_of_two": power_of_two,
    "kv_aware": kv_aware,
    "prefix_aware": prefix_aware,
    "session_affinity": session_affinity,
}
