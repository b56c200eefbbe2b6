"""The routing table: client-facing models -> versions -> pools of shared endpoints."""

from __future__ import annotations

from kvserve.gateway.config import GatewayConfig, PoolConfig
from kvserve.gateway.errors import not_found
from kvserve.gateway.fleet.endpoints import Endpoint, EndpointRegistry
from kvserve.gateway.routing.pool import Pool
from kvserve.gateway.routing.versions import ModelRoute, VersionRoute


class RoutingTable:
    """Built from a config; rebuilt on reload. In-flight requests keep the objects they
    resolved, so swapping in a new table never disturbs them."""

    def __init__(self, models: dict[str, ModelRoute]) -> None:
        self.models = models

    @classmethod
    def build(cls, config: GatewayConfig, registry: EndpointRegistry,
              previous: RoutingTable | None = None) -> RoutingTable:
        models: dict[str, ModelRoute] = {}
        for name, model in config.models.items():
            versions: dict[str, VersionRoute] = {}
            for vname, vc in model.versions.items():
                old = previous.version(name, vname) if previous is not None else None
                pool = _pool(vc.pool, registry, old.pool if old else None)
                long_pool, threshold = None, 0
                if vc.long_prompt is not None:
                    long_pool = _pool(vc.long_prompt.pool, registry, old.long_pool if old else None)
                    threshold = vc.long_prompt.threshold_tokens
                versions[vname] = VersionRoute(name, vname, vc.weight, vc.upstream_model or name,
                                               pool, long_pool, threshold)
            models[name] = ModelRoute(name, versions, model.sticky)
        registry.retain(url for m in models.values() for v in m.versions.values()
                        for p in v.all_pools() for url in (e.url for e in p.endpoints))
        return cls(models)

    def model(self, name: str) -> ModelRoute:
        route = self.models.get(name)
        if route is None:
            raise not_found(f"the model '{name}' does not exist", "model")
        return route

    def version(self, model: str, version: str) -> VersionRoute | None:
        route = self.models.get(model)
        return None if route is None else route.versions.get(version)

    def pools(self) -> list[Pool]:
        return [p for m in self.models.values() for v in m.versions.values() for p in v.all_pools()]

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint in some pool, once each."""
        seen: dict[str, Endpoint] = {}
        for pool in self.pools():
            for endpoint in pool.endpoints:
                seen.setdefault(endpoint.url, endpoint)
        return list(seen.values())


def _pool(config: PoolConfig, registry: EndpointRegistry, previous: Pool | None) -> Pool:
    endpoints = [registry.get_or_create(e) for e in config.endpoints]
    return Pool.build(endpoints, config.policy, config.options, previous)
