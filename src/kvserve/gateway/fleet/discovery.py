"""DNS discovery: a pool's endpoints from A or SRV records, re-resolved on an interval.

In Kubernetes a headless Service publishes one A record (and one SRV record per port)
for each ready pod, so resolving its name lists the replicas that can take traffic now.
A pool with `discovery` holds its configured endpoints plus those of the latest answer:
a new address joins the pool, one that left the records leaves it (the requests it is
serving finish; no new ones go there). A lookup that fails (timeout, server error)
keeps the previous answer; a name that does not exist or has no records empties it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Iterator

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from kvserve.gateway.config import EndpointConfig, GatewayConfig, PoolConfig
from kvserve.gateway.fleet.endpoints import EndpointRegistry
from kvserve.gateway.fleet.fleet_config import DnsDiscoveryConfig
from kvserve.gateway.routing.pool import Pool
from kvserve.gateway.routing.table import RoutingTable

log = logging.getLogger("kvserve.gateway.fleet.discovery")
GONE = (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)  # an authoritative "nothing there": no endpoints


def resolver_for(config: DnsDiscoveryConfig) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=config.nameserver is None)
    if config.nameserver is not None:
        resolver.nameservers = [config.nameserver]
        resolver.port = config.nameserver_port
    resolver.lifetime = config.timeout_s
    return resolver


async def lookup(config: DnsDiscoveryConfig, resolver: dns.asyncresolver.Resolver) -> list[str]:
    """Endpoint URLs the records name, sorted; raises dns.exception.DNSException when the
    lookup failed (as opposed to finding nothing)."""
    try:
        if config.record == "A":
            answer = await resolver.resolve(config.name, "A")
            return sorted({f"{config.scheme}://{r.address}:{config.port}" for r in answer})
        answer = await resolver.resolve(config.name, "SRV")
        urls = set()
        for record in answer:
            for address in await _addresses(resolver, answer.response, record.target):
                urls.add(f"{config.scheme}://{address}:{record.port}")
        return sorted(urls)
    except GONE:
        return []


async def _addresses(resolver: dns.asyncresolver.Resolver, response: dns.message.Message,
                     target: dns.name.Name) -> list[str]:
    """The target's A records: from the SRV answer's additional section when it has them."""
    extra = [r.address for rrset in response.additional if rrset.name == target and rrset.rdtype == dns.rdatatype.A
             for r in rrset]
    if extra:
        return extra
    try:
        return [r.address for r in await resolver.resolve(target, "A")]
    except GONE:
        return []


def discovered_pools(config: GatewayConfig, table: RoutingTable) -> Iterator[tuple[PoolConfig, Pool]]:
    """(pool config, live pool) of every pool in the table that has `discovery` set."""
    for name, model in config.models.items():
        for vname, version in model.versions.items():
            route = table.version(name, vname)
            if route is None:
                continue
            if version.pool.discovery is not None:
                yield version.pool, route.pool
            if version.long_prompt is not None and version.long_prompt.pool.discovery is not None \
                    and route.long_pool is not None:
                yield version.long_prompt.pool, route.long_pool


class Discovery:
    """One resolve loop per distinct discovery setting of the config. `sync` (after a start
    or a reload) starts and stops loops and re-applies the answers already known."""

    def __init__(self, registry: EndpointRegistry, current: Callable[[], tuple[GatewayConfig, RoutingTable]],
                 changed: Callable[[], None]) -> None:
        self.registry = registry
        self.current = current  # the live config and routing table
        self.changed = changed  # called after pools changed (the monitors follow)
        self.answers: dict[DnsDiscoveryConfig, list[str]] = {}
        self.tasks: dict[DnsDiscoveryConfig, asyncio.Task[None]] = {}

    def sync(self) -> None:
        config, table = self.current()
        wanted = {pool_config.discovery for pool_config, _ in discovered_pools(config, table)}
        for setting in [s for s in self.tasks if s not in wanted]:
            self.tasks.pop(setting).cancel()
            self.answers.pop(setting, None)
        for setting in wanted:
            if setting is not None and setting not in self.tasks:
                self.tasks[setting] = asyncio.ensure_future(self._loop(setting))
        for setting, urls in self.answers.items():
            self.apply(setting, urls)

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    async def _loop(self, setting: DnsDiscoveryConfig) -> None:
        resolver = resolver_for(setting)
        while True:
            try:
                urls = await lookup(setting, resolver)
            except dns.exception.DNSException as exc:
                log.warning("dns discovery of %s failed (%s); keeping %d endpoints", setting.name,
                            type(exc).__name__, len(self.answers.get(setting, [])))
            else:
                if urls != self.answers.get(setting):
                    self.answers[setting] = urls
                    self.apply(setting, urls)
            await asyncio.sleep(setting.interval_s)

    def apply(self, setting: DnsDiscoveryConfig, urls: list[str]) -> None:
        """Make every pool of `setting` hold its configured endpoints plus `urls`."""
        config, table = self.current()
        touched = False
        for pool_config, pool in discovered_pools(config, table):
            if pool_config.discovery == setting:
                touched |= self._reconcile(pool, [e.url for e in pool_config.endpoints], urls, setting)
        if touched:
            self.registry.retain(e.url for e in table.endpoints())
            self.changed()

    def _reconcile(self, pool: Pool, static: list[str], found: list[str], setting: DnsDiscoveryConfig) -> bool:
        wanted = set(static) | set(found)
        have = {e.url for e in pool.endpoints}
        for url in sorted(have - wanted):
            pool.remove(url)
        for url in sorted(wanted - have):
            pool.add(self.registry.get_or_create(EndpointConfig(url=url, api_key=setting.api_key)))
        if have != wanted:
            log.info("dns discovery of %s: %d endpoints (+%d, -%d)", setting.name, len(wanted),
                     len(wanted - have), len(have - wanted))
        return have != wanted
