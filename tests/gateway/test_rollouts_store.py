"""Rollouts saved in a real Redis: a change made while Redis is down is saved once it is
back, and a new controller (a restarted gateway) restores what was saved."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from kvserve.control.rollout import Phase, RolloutPlan
from kvserve.gateway.access_config import RedisConfig
from kvserve.gateway.config import parse_config
from kvserve.gateway.fleet.endpoints import EndpointRegistry
from kvserve.gateway.rollouts.config import RolloutsConfig
from kvserve.gateway.rollouts.controller import RolloutController
from kvserve.gateway.rollouts.metrics import RolloutMetrics
from kvserve.gateway.rollouts.store import RedisRollouts
from kvserve.gateway.routing.table import RoutingTable
from kvserve.gateway.store.redis_link import RedisLink

from .conftest import RedisServer, fast_config

MODELS = {"chat": {"versions": {"v1": {"pool": {"endpoints": ["http://127.0.0.1:9"]}},
                                "v2": {"weight": 0, "pool": {"endpoints": ["http://127.0.0.1:10"]}}}}}


def controller(url: str, prefix: str) -> tuple[RolloutController, RoutingTable]:
    config = parse_config(fast_config(MODELS))
    table = RoutingTable.build(config, EndpointRegistry(config.breaker, lambda url, state: None))
    link = RedisLink(RedisConfig(url=url, prefix=prefix, retry_after_s=0.05), lambda op: None)
    return RolloutController(RolloutsConfig(), RedisRollouts(link), lambda: table,
                             RolloutMetrics(CollectorRegistry())), table


def test_a_change_made_while_redis_is_down_is_saved_when_it_is_back(tmp_path, redis_prefix):
    redis = RedisServer(tmp_path).start()  # its own server: this test stops it
    try:
        async def scenario() -> None:
            first, _ = controller(redis.url, redis_prefix)
            await first.tick()  # restores nothing
            redis.kill()
            rollout = await first.begin("chat", "v1", "v2", RolloutPlan(steps=(10.0,), bake_s=60), None)
            assert rollout.state.phase is Phase.RUNNING and first.unsaved == {"chat"}  # runs on from memory
            redis.start()
            await asyncio.sleep(0.1)  # past retry_after_s
            await first.tick()
            assert first.unsaved == set()

            second, table = controller(redis.url, redis_prefix)
            await second.tick()
            restored = second.get("chat")
            assert (restored.baseline, restored.candidate, restored.state.step) == ("v1", "v2", 0)
            assert {n: v.weight for n, v in table.models["chat"].versions.items()} == {"v1": 90.0, "v2": 10.0}

        asyncio.run(scenario())
    finally:
        redis.kill()
