"""DNS discovery against a real DNS server on loopback whose records change during the test.

The server is a few lines over dnspython's message API: it answers A and SRV questions
from a dict the test edits, NXDOMAIN for other names, and can go silent (lookups time
out) to show that a failed lookup keeps the endpoints already known.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import httpx
import pytest

from kvserve.bench.fake_upstream import FakeUpstreamConfig, FakeUpstreamServer
from kvserve.gateway.config import ConfigError, parse_config
from tests.helpers import free_port, wait_until

from .conftest import ADMIN_KEY, chat, fast_config

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
SERVICE = "replicas.kvserve.test."
SRV_NAME = "_http._tcp." + SERVICE


class DnsServer:
    """UDP DNS on 127.0.0.1: `records[(name, type)]` is a list of rdata texts."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.records: dict[tuple[str, str], list[str]] = {}
        self.silent = False
        self.queries = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> DnsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.sock.close()

    def set_srv(self, targets: list[tuple[str, int]]) -> None:
        """SRV records `host:port` for each (ip, port), each host with its A record."""
        records = {(SRV_NAME, "SRV"): [f"0 0 {port} r{i}.{SERVICE}" for i, (_, port) in enumerate(targets)]}
        records.update({(f"r{i}.{SERVICE}", "A"): [ip] for i, (ip, _) in enumerate(targets)})
        self.records = records

    def _serve(self) -> None:
        while True:
            try:
                wire, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            self.queries += 1
            if self.silent:
                continue
            try:
                self.sock.sendto(self._answer(dns.message.from_wire(wire)).to_wire(), peer)
            except OSError:  # closed by stop() meanwhile
                return

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name, kind = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
        rdatas = self.records.get((name, kind))
        if not rdatas:
            if not any(n == name for n, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        response.answer.append(dns.rrset.from_text_list(name, 1, "IN", kind, rdatas))
        return response


@pytest.fixture
def dns_server():
    server = DnsServer().start()
    yield server
    server.stop()


def discovery(server: DnsServer, **extra) -> dict:
    return {"name": SRV_NAME, "record": "SRV", "interval_s": 0.1, "timeout_s": 0.3,
            "nameserver": "127.0.0.1", "nameserver_port": server.port, **extra}


def pool_urls(gw) -> list[str]:
    state = httpx.get(gw.url + "/admin/state", headers=AUTH).json()
    return sorted(state["models"]["fake"]["versions"]["default"]["pool"]["endpoints"])


def served_by(gw, n: int) -> Counter:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        return Counter(client.post("/v1/chat/completions", json=chat()).headers.get("x-upstream-name")
                       for _ in range(n))


def test_srv_records_add_and_drain_replicas_as_they_change(upstream, gateway, dns_server):
    a, b = upstream(name="a"), upstream(name="b")
    dns_server.set_srv([("127.0.0.1", a.port)])
    gw = gateway(fast_config({"fake": {"pool": {"policy": "round_robin", "discovery": discovery(dns_server)}}}))
    wait_until(lambda: pool_urls(gw) == [a.url], 10, "the first answer never reached the pool")
    assert served_by(gw, 6) == {"a": 6}

    dns_server.set_srv([("127.0.0.1", a.port), ("127.0.0.1", b.port)])
    wait_until(lambda: pool_urls(gw) == sorted([a.url, b.url]), 10, "a new SRV record did not join the pool")
    assert served_by(gw, 8) == {"a": 4, "b": 4}

    dns_server.set_srv([("127.0.0.1", b.port)])
    wait_until(lambda: pool_urls(gw) == [b.url], 10, "a removed record did not leave the pool")
    assert served_by(gw, 6) == {"b": 6}
    admin = httpx.get(gw.url + "/admin/state", headers=AUTH).json()
    assert [e["url"] for e in admin["endpoints"]] == [b.url]  # no probes or breakers kept for the gone one


@pytest.fixture
def loopback_pair():
    """Two fake upstreams on one port, at 127.0.0.2 and 127.0.0.3 (A records carry no port)."""
    port = free_port()
    servers = [FakeUpstreamServer(FakeUpstreamConfig(name=name, tokens_per_second=0.0, num_tokens=4), ip, port).start()
               for name, ip in (("two", "127.0.0.2"), ("three", "127.0.0.3"))]
    yield servers
    for server in servers:
        server.stop()


def test_a_records_with_a_port_beside_a_static_endpoint(upstream, gateway, dns_server, loopback_pair):
    static = upstream(name="static")
    two, three = loopback_pair
    dns_server.records = {(SERVICE, "A"): ["127.0.0.2", "127.0.0.3"]}
    setting = discovery(dns_server, name=SERVICE, record="A", port=two.port)
    gw = gateway(fast_config({"fake": {"pool": {"policy": "round_robin", "endpoints": [static.url],
                                                 "discovery": setting}}}))
    wait_until(lambda: len(pool_urls(gw)) == 3, 10, "A records never joined the pool")
    assert served_by(gw, 9) == {"static": 3, "two": 3, "three": 3}

    dns_server.records = {(SERVICE, "A"): ["127.0.0.3"]}
    wait_until(lambda: pool_urls(gw) == sorted([static.url, three.url]), 10, "a removed A record stayed")

    dns_server.records = {}  # the name is gone (NXDOMAIN): only the configured endpoint is left
    wait_until(lambda: pool_urls(gw) == [static.url], 10, "NXDOMAIN did not empty the discovered part")
    assert served_by(gw, 3) == {"static": 3}


def test_a_failed_lookup_keeps_the_endpoints_already_found(upstream, gateway, dns_server):
    a = upstream(name="a")
    dns_server.set_srv([("127.0.0.1", a.port)])
    gw = gateway(fast_config({"fake": {"pool": {"discovery": discovery(dns_server, api_key="upstream-secret")}}}))
    wait_until(lambda: pool_urls(gw) == [a.url], 10, "the first answer never reached the pool")
    assert served_by(gw, 1) == {"a": 1}
    last = httpx.get(a.url + "/admin/last_request").json()
    assert last["headers"]["authorization"] == "Bearer upstream-secret"  # the discovery's api_key goes upstream
    dns_server.silent = True
    seen = dns_server.queries
    wait_until(lambda: dns_server.queries >= seen + 3, 10, "the gateway stopped asking")  # timed-out lookups
    assert pool_urls(gw) == [a.url]
    assert served_by(gw, 3) == {"a": 3}


def test_discovery_settings_are_validated():
    def config(setting: dict) -> dict:
        return fast_config({"fake": {"pool": {"discovery": setting}}})

    with pytest.raises(ConfigError, match="record A needs `port`"):
        parse_config(config({"name": SERVICE}))
    with pytest.raises(ConfigError, match="not a DNS name"):
        parse_config(config({"name": "bad name!", "record": "SRV"}))
    with pytest.raises(ConfigError, match="record"):
        parse_config(config({"name": SERVICE, "record": "MX"}))
    assert parse_config(config({"name": SRV_NAME, "record": "SRV"})).models["fake"].versions["default"].pool.discovery
