"""The routing table: shared endpoints, and rebuilds that keep endpoint state."""

from __future__ import annotations

from kvserve.gateway.config import parse_config
from kvserve.gateway.fleet.endpoints import EndpointRegistry
from kvserve.gateway.routing.table import RoutingTable
from kvserve.openai_error import OpenAIError

import pytest


def config(endpoints_v1: list[str], endpoints_v2: list[str]) -> dict:
    return {"models": {"m": {"versions": {
        "v1": {"pool": {"endpoints": endpoints_v1}, "long_prompt": {"threshold_tokens": 10,
                                                                    "pool": {"endpoints": ["http://long:1"]}}},
        "v2": {"weight": 0, "upstream_model": "m2", "pool": {"endpoints": endpoints_v2, "policy": "prefix_aware"}},
    }}}}


def test_an_endpoint_listed_twice_is_one_object():
    registry = EndpointRegistry(parse_config(config(["http://a:1"], ["http://a:1"])).breaker, lambda u, s: None)
    table = RoutingTable.build(parse_config(config(["http://a:1"], ["http://a:1"])), registry)
    v1, v2 = table.models["m"].versions["v1"], table.models["m"].versions["v2"]
    assert v1.pool.endpoints[0] is v2.pool.endpoints[0]
    assert v2.upstream_model == "m2" and v1.upstream_model == "m" and v1.long_threshold == 10
    assert sorted(e.url for e in table.endpoints()) == ["http://a:1", "http://long:1"]
    with pytest.raises(OpenAIError) as err:
        table.model("nope")
    assert err.value.status == 404


def test_a_rebuild_keeps_surviving_endpoints_and_forgets_removed_ones():
    first = parse_config(config(["http://a:1", "http://b:1"], ["http://c:1"]))
    registry = EndpointRegistry(first.breaker, lambda u, s: None)
    old = RoutingTable.build(first, registry)
    a = registry.endpoints["http://a:1"]
    a.in_flight, a.draining = 3, True
    prefix_state = old.models["m"].versions["v2"].pool.state
    new = RoutingTable.build(parse_config(config(["http://a:1"], ["http://c:1"])), registry, previous=old)
    assert new.models["m"].versions["v1"].pool.endpoints[0] is a and a.in_flight == 3 and a.draining
    assert "http://b:1" not in registry.endpoints
    assert new.models["m"].versions["v2"].pool.state is prefix_state
