"""A pool: the endpoints that serve one model version, and the policy that picks among them."""

from __future__ import annotations

from typing import Collection

from kvserve.gateway.fleet.endpoints import Endpoint
from kvserve.gateway.routing.policies import POLICIES, PolicyOptions, PolicyState, RouteRequest
from kvserve.gateway.routing.stats import EndpointStats


class Pool:
    """Endpoints plus one routing policy. `pick` filters to endpoints that may take
    traffic now (healthy, not draining, breaker closed or with a half-open trial slot)."""

    def __init__(self, endpoints: list[Endpoint], policy: str, state: PolicyState) -> None:
        self.endpoints = endpoints
        self.policy_name = policy
        self.policy = POLICIES[policy]
        self.state = state

    @classmethod
    def build(cls, endpoints: list[Endpoint], policy: str, options: PolicyOptions,
              previous: Pool | None = None) -> Pool:
        """A new pool; keeps `previous`'s policy memory (prefix index, ring) when compatible."""
        if previous is not None and previous.policy_name == policy and previous.state.options == options:
            return cls(endpoints, policy, previous.state)
        return cls(endpoints, policy, PolicyState(options))

    def snapshot(self, now: float, stale_after_s: float, exclude: Collection[str] = ()) -> list[EndpointStats]:
        return [e.stats(now, stale_after_s) for e in self.endpoints if e.url not in exclude and e.routable(now)]

    def pick(self, request: RouteRequest, now: float, stale_after_s: float,
             exclude: Collection[str] = ()) -> Endpoint | None:
        snapshot = self.snapshot(now, stale_after_s, exclude)
        if not snapshot:
            return None
        url = self.policy(snapshot, request, self.state)
        return next(e for e in self.endpoints if e.url == url)

    def add(self, endpoint: Endpoint) -> None:
        if all(e.url != endpoint.url for e in self.endpoints):
            self.endpoints.append(endpoint)

    def remove(self, url: str) -> bool:
        before = len(self.endpoints)
        self.endpoints = [e for e in self.endpoints if e.url != url]
        return len(self.endpoints) != before
