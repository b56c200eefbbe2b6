"""Picking a model version: pinned, weighted, sticky."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from kvserve.gateway.routing.policies import PolicyOptions
from kvserve.gateway.routing.pool import Pool
from kvserve.gateway.routing.versions import ModelRoute, VersionRoute, choose_version, split_model_name
from kvserve.openai_error import OpenAIError


def model(weights: dict[str, float], sticky: bool = True) -> ModelRoute:
    versions = {name: VersionRoute("m", name, w, "m", Pool.build([], "round_robin", PolicyOptions()))
                for name, w in weights.items()}
    return ModelRoute("m", versions, sticky)


def test_model_at_version_is_split():
    assert split_model_name("llama@v2") == ("llama", "v2")
    assert split_model_name("llama") == ("llama", None)


def test_a_pinned_version_wins_and_an_unknown_one_is_a_404():
    m = model({"v1": 100, "v2": 0})
    assert choose_version(m, "v2", None, random.Random(0)).name == "v2"
    with pytest.raises(OpenAIError) as err:
        choose_version(m, "v9", None, random.Random(0))
    assert err.value.status == 404 and err.value.param == "model"


def test_weights_split_unpinned_traffic():
    m = model({"v1": 95, "v2": 5}, sticky=False)
    rng = random.Random(1)
    counts = Counter(choose_version(m, None, None, rng).name for _ in range(4000))
    assert 0.035 < counts["v2"] / 4000 < 0.065


def test_sticky_users_keep_their_version_and_still_follow_the_weights():
    m = model({"v1": 50, "v2": 50})
    rng = random.Random(2)
    first = {u: choose_version(m, None, f"user-{u}", rng).name for u in range(1000)}
    again = {u: choose_version(m, None, f"user-{u}", rng).name for u in range(1000)}
    assert first == again
    assert 400 < Counter(first.values())["v2"] < 600
    m.versions["v2"].weight = 10  # canary scaled down: only v2 users move, to v1
    after = {u: choose_version(m, None, f"user-{u}", rng).name for u in range(1000)}
    assert all(after[u] == "v1" for u in first if first[u] == "v1")


def test_all_weights_zero_is_a_503_unless_pinned():
    m = model({"v1": 0})
    with pytest.raises(OpenAIError) as err:
        choose_version(m, None, None, random.Random(0))
    assert err.value.status == 503
    assert choose_version(m, "v1", None, random.Random(0)).name == "v1"


def test_long_prompts_go_to_the_long_pool_and_fall_back_to_the_main_one():
    short, long = Pool.build([], "round_robin", PolicyOptions()), Pool.build([], "least_request", PolicyOptions())
    version = VersionRoute("m", "v", 1, "m", short, long, long_threshold=1000)
    assert version.pools_for(999) == (short, long)
    assert version.pools_for(1000) == (long, short)
    assert VersionRoute("m", "v", 1, "m", short).pools_for(10**6) == (short,)
