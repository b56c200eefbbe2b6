"""Routing policies as plain functions of a snapshot: no network."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from kvserve.gateway.routing.policies import PolicyOptions
from kvserve.gateway.routing.stats import EndpointStats, EngineStats
from kvserve.gateway.routing.policies import (
    POLICIES,
    PolicyState,
    RouteRequest,
    endpoint_load,
    kv_aware,
    least_request,
    loads,
    power_of_two,
    prefix_aware,
    round_robin,
    session_affinity,
)


def stats(url: str, in_flight: int = 0, waiting: float | None = 0, running: float = 0,
          kv: float | None = 0.0, at_scrape: int | None = None) -> EndpointStats:
    engine = None
    if waiting is not None:
        engine = EngineStats(waiting, running, kv, 0.0, in_flight if at_scrape is None else at_scrape)
    return EndpointStats(url, in_flight, engine)


def state(**options) -> PolicyState:
    return PolicyState(PolicyOptions(**options), random.Random(0))


def test_the_registry_holds_every_documented_policy():
    assert set(POLICIES) == {"round_robin", "least_request", "power_of_two", "kv_aware", "prefix_aware",
                             "session_affinity"}


def test_round_robin_visits_each_endpoint_in_turn():
    snap = [stats("a"), stats("b"), stats("c")]
    s = state()
    picks = [round_robin(snap, RouteRequest(), s) for _ in range(6)]
    assert Counter(picks) == {"a": 2, "b": 2, "c": 2}
    assert picks[:3] == picks[3:]


def test_load_is_the_engine_count_corrected_by_what_the_gateway_sent_since():
    # engine saw 3 waiting + 2 running when 1 of ours was open; now 4 are open
    assert endpoint_load(stats("a", in_flight=4, waiting=3, running=2, at_scrape=1)) == 8
    # requests finished since the scrape lower the estimate, never below our own in-flight
    assert endpoint_load(stats("a", in_flight=2, waiting=0, running=5, at_scrape=6)) == 2
    assert endpoint_load(stats("a", in_flight=3, waiting=None)) is None


def test_unknown_stats_count_as_average_load_not_as_idle():
    snap = [stats("busy", waiting=10), stats("unknown", waiting=None), stats("idle", waiting=0)]
    assert loads(snap) == [10, 5, 0]
    s = state()
    assert {least_request(snap, RouteRequest(), s) for _ in range(5)} == {"idle"}
    # with only busy known endpoints, an endpoint whose scrapes stopped is not a magnet
    snap = [stats("a", waiting=8), stats("b", waiting=9), stats("stale", waiting=None)]
    assert least_request(snap, RouteRequest(), s) == "a"


def test_least_request_rotates_between_equally_loaded_endpoints():
    snap = [stats("a"), stats("b"), stats("c", waiting=3)]
    s = state()
    assert Counter(least_request(snap, RouteRequest(), s) for _ in range(10)) == {"a": 5, "b": 5}


def test_power_of_two_never_picks_the_busier_of_its_two_samples():
    snap = [stats("a", waiting=0), stats("b", waiting=5), stats("c", waiting=9)]
    s = state()
    picks = Counter(power_of_two(snap, RouteRequest(), s) for _ in range(300))
    assert "c" not in picks  # c is the busier of any pair it is in
    assert picks["a"] > picks["b"] > 0


def test_kv_aware_prefers_free_kv_cache_at_equal_queues_and_short_queues_at_equal_kv():
    s = state()
    snap = [stats("full", waiting=2, kv=0.95), stats("free", waiting=2, kv=0.10)]
    assert kv_aware(snap, RouteRequest(), s) == "free"
    snap = [stats("long", waiting=9, kv=0.5), stats("short", waiting=1, kv=0.5)]
    assert kv_aware(snap, RouteRequest(), s) == "short"
    s = state(queue_weight=0.0, kv_weight=1.0)
    snap = [stats("long-but-free", waiting=9, kv=0.1), stats("short-but-full", waiting=1, kv=0.9)]
    assert kv_aware(snap, RouteRequest(), s) == "long-but-free"


def test_prefix_aware_sends_a_shared_prefix_to_the_endpoint_that_saw_it():
    s = state(prefix_chunk_chars=16)
    snap = [stats("a"), stats("b"), stats("c")]
    system = "You are a helpful pirate. " * 4
    first = prefix_aware(snap, RouteRequest(prompt=system + "question one"), s)
    assert {prefix_aware(snap, RouteRequest(prompt=system + f"question {i}"), s) for i in range(10)} == {first}
    # new prefixes go by load (equal here, so they rotate): tenants spread out
    tenants = [f"tenant {i} system prompt " * 4 for i in range(6)]
    homes = {t: prefix_aware(snap, RouteRequest(prompt=t + "hi"), s) for t in tenants}
    assert len(set(homes.values())) == 3
    assert all(prefix_aware(snap, RouteRequest(prompt=t + "again"), s) == home for t, home in homes.items())


def test_prefix_aware_falls_back_to_load_when_the_cached_endpoint_is_much_busier():
    s = state(prefix_chunk_chars=16, prefix_max_imbalance=4)
    prompt = "shared system prompt for tenant A " * 4
    calm = [stats("a"), stats("b")]
    owner = prefix_aware(calm, RouteRequest(prompt=prompt), s)
    other = "b" if owner == "a" else "a"
    slightly = [stats(owner, waiting=3), stats(other)]
    assert prefix_aware(slightly, RouteRequest(prompt=prompt), s) == owner
    swamped = [stats(owner, waiting=20), stats(other)]
    assert prefix_aware(swamped, RouteRequest(prompt=prompt), s) == other


def test_session_affinity_keeps_sessions_and_moves_only_the_departed_endpoints_ones():
    s = state()
    full = [stats(u) for u in ("a", "b", "c", "d")]
    keys = [f"user-{i}" for i in range(400)]
    before = {k: session_affinity(full, RouteRequest(session_key=k), s) for k in keys}
    assert set(before.values()) == {"a", "b", "c", "d"}
    assert before == {k: session_affinity(full, RouteRequest(session_key=k), s) for k in keys}
    without_c = [e for e in full if e.url != "c"]
    after = {k: session_affinity(without_c, RouteRequest(session_key=k), s) for k in keys}
    moved = {k for k in keys if before[k] != after[k]}
    assert moved == {k for k in keys if before[k] == "c"}
    # c comes back: its sessions return to it
    assert {k: session_affinity(full, RouteRequest(session_key=k), s) for k in keys} == before


def test_session_affinity_without_a_key_goes_by_load():
    snap = [stats("busy", waiting=5), stats("idle")]
    assert session_affinity(snap, RouteRequest(session_key=None), state()) == "idle"


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_returns_a_url_of_the_snapshot(name):
    snap = [stats("a", waiting=None), stats("b", waiting=2, kv=None), stats("c", waiting=1, kv=0.3)]
    s = state()
    for i in range(20):
        assert POLICIES[name](snap, RouteRequest(prompt="x" * 600, session_key=str(i)), s) in {"a", "b", "c"}
    assert POLICIES[name](snap[:1], RouteRequest(prompt="y"), s) == "a"
