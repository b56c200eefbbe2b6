"""ModelPool decisions on plain entries: LRU eviction, pinned and busy models kept, the
budget counted with loads and hot swaps in progress, idle unloading."""

from __future__ import annotations

import pytest

from kvserve.control.model_pool import DoesNotFit, ModelPool, ModelState, PoolEntry

GIB = 2**30


def pool(budget_gib: float, *entries: PoolEntry) -> ModelPool:
    return ModelPool(int(budget_gib * GIB), list(entries))


def load(p: ModelPool, name: str, now: float) -> list[str]:
    victims = p.plan_load(name)
    for victim in victims:
        p.unloaded(victim)
    p.loading(name)
    p.loaded(name, now)
    return victims


def test_evicts_least_recently_used_first_and_only_as_many_as_needed():
    p = pool(3, PoolEntry("a", GIB), PoolEntry("b", GIB), PoolEntry("c", GIB), PoolEntry("d", GIB))
    for t, name in enumerate("abc"):
        load(p, name, float(t))
    p.begin("a", 10.0)
    p.end("a", 11.0)  # a is now the most recently used
    assert load(p, "d", 12.0) == ["b"]
    assert p.entries["b"].state is ModelState.AVAILABLE and p.used_bytes() == 3 * GIB


def test_pinned_and_busy_models_are_never_evicted():
    p = pool(2, PoolEntry("pinned", GIB, pinned=True), PoolEntry("busy", GIB), PoolEntry("new", GIB))
    load(p, "pinned", 0.0)
    load(p, "busy", 1.0)
    p.begin("busy", 2.0)
    with pytest.raises(DoesNotFit, match="pinned, busy or loading"):
        p.plan_load("new")
    p.end("busy", 3.0)
    assert p.plan_load("new") == ["busy"]


def test_a_model_larger_than_the_budget_never_fits():
    p = pool(1, PoolEntry("huge", 2 * GIB))
    with pytest.raises(DoesNotFit, match="needs 2.00 GiB"):
        p.plan_load("huge")


def test_loading_models_count_against_the_budget_and_cannot_be_evicted():
    p = pool(1.5, PoolEntry("a", GIB), PoolEntry("b", GIB))
    p.loading("a")
    with pytest.raises(DoesNotFit):
        p.plan_load("b")
    assert p.plan_load("a") == []  # already on its way


def test_a_hot_swap_counts_both_versions_until_the_old_one_is_freed():
    p = pool(2.2, PoolEntry("a", GIB), PoolEntry("b", GIB))
    load(p, "a", 0.0)
    assert p.plan_room(GIB // 2, keep="a") == []
    p.swapping("a", GIB // 2)  # the new version is smaller
    assert p.used_bytes() == GIB + GIB // 2 and not p.entries["a"].evictable()
    with pytest.raises(DoesNotFit):
        p.plan_load("b")
    old = p.switched("a", 1.0)
    assert old == GIB and p.used_bytes() == GIB + GIB // 2  # the old one drains
    p.swapping("a", GIB // 2)  # a next swap may start while the previous one drains
    assert p.used_bytes() == 2 * GIB
    p.swap_failed("a")
    p.drained("a", old)
    assert p.used_bytes() == GIB // 2
    assert p.plan_load("b") == []


def test_a_swap_of_a_model_that_was_not_loaded_leaves_nothing_to_drain():
    p = pool(3, PoolEntry("a", GIB))
    p.swapping("a", 2 * GIB)
    assert p.switched("a", 0.0) == 0
    assert p.entries["a"].state is ModelState.LOADED and p.used_bytes() == 2 * GIB


def test_a_failed_swap_keeps_the_old_estimate():
    p = pool(3, PoolEntry("a", GIB))
    load(p, "a", 0.0)
    p.swapping("a", 2 * GIB)
    p.swap_failed("a")
    assert p.used_bytes() == GIB


def test_idle_lists_unpinned_unused_loaded_models():
    p = pool(10, PoolEntry("old", GIB), PoolEntry("fresh", GIB), PoolEntry("pinned", GIB, pinned=True),
             PoolEntry("busy", GIB), PoolEntry("never", GIB))
    for name in ("old", "pinned", "busy"):
        load(p, name, 0.0)
    load(p, "fresh", 50.0)
    p.begin("busy", 0.0)
    assert p.idle(now=100.0, idle_s=60.0) == ["old"]
