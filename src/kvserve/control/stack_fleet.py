"""What `kvserve up` reads from and tells the running stack over HTTP: each replica's
readiness and load, the gateway's held requests, and the gateway's pool (admin API)."""

from __future__ import annotations

import re

import httpx

from kvserve.control.autoscaler import FleetSnapshot
from kvserve.gateway.fleet.scrape import parse_metrics

_HELD = re.compile(rb'^kvserve:gateway_held_requests\{([^}\n]*)\}[ \t]+([^ \t\n]+)', re.MULTILINE)


class StackClient:
    """Short-timeout HTTP calls; every failure reads as "not now" (the loop tries again)."""

    def __init__(self, gateway_url: str, admin_key: str, model: str, timeout_s: float = 1.0) -> None:
        self.gateway_url = gateway_url
        self.model = model
        self.http = httpx.Client(timeout=timeout_s, headers={"x-admin-key": admin_key})

    def close(self) -> None:
        self.http.close()

    def ok(self, url: str) -> bool:
        try:
            return self.http.get(url).status_code == 200
        except httpx.HTTPError:
            return False

    def admin(self, action: str, replica_url: str) -> bool:
        """Add a replica to the model's pool, or remove it ("add" / "remove")."""
        body = {"model": self.model, "url": replica_url}
        try:
            response = self.http.post(f"{self.gateway_url}/admin/endpoints/{action}", json=body)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 or (action == "remove" and response.status_code == 404)

    def held(self) -> float | None:
        """Requests the gateway holds for this model; None when the gateway does not answer."""
        try:
            text = self.http.get(f"{self.gateway_url}/metrics").content
        except httpx.HTTPError:
            return None
        label = f'model="{self.model}"'.encode()
        return sum(float(m.group(2)) for m in _HELD.finditer(text) if label in m.group(1).split(b","))

    def fleet(self, at: float, replicas: int, ready_urls: list[str]) -> FleetSnapshot:
        """The snapshot the autoscaler decides on: load summed over the replicas that answered."""
        waiting = running = kv_sum = 0.0
        answered = 0
        for url in ready_urls:
            try:
                stats = parse_metrics(self.http.get(f"{url}/metrics").content, at, 0)
            except httpx.HTTPError:
                continue
            if stats is None:
                continue
            answered += 1
            waiting, running = waiting + stats.waiting, running + stats.running
            kv_sum += stats.kv_usage or 0.0
        kv = kv_sum / answered if answered else 0.0
        return FleetSnapshot(at, replicas, answered, waiting, running, kv, self.held() or 0.0)
