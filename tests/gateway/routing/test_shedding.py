"""Priority shedding decisions."""

from __future__ import annotations

import pytest

from kvserve.gateway.config import SheddingConfig
from kvserve.gateway.routing.shedding import Shedder, saturated
from kvserve.gateway.routing.stats import EndpointStats, EngineStats
from kvserve.openai_error import OpenAIError


def endpoint(waiting: float | None, in_flight: int = 0, at_scrape: int = 0) -> EndpointStats:
    engine = None if waiting is None else EngineStats(waiting, 4, 0.5, 0.0, at_scrape)
    return EndpointStats("u", in_flight, engine)


def test_saturated_only_when_every_endpoint_is_known_to_queue():
    assert saturated([endpoint(10), endpoint(12)], 10)
    assert not saturated([endpoint(10), endpoint(3)], 10)
    assert not saturated([endpoint(10), endpoint(None)], 10)  # unknown is no evidence
    assert not saturated([], 10)
    assert saturated([endpoint(8, in_flight=5, at_scrape=3)], 10)  # 2 more sent since the scrape


def test_low_priority_gets_429_with_retry_after_and_high_priority_passes():
    shedder = Shedder(SheddingConfig(queue_threshold=5, shed_at_or_above=1, retry_after_s=2))
    full = [endpoint(9)]
    with pytest.raises(OpenAIError) as err:
        shedder.check(1, full)
    assert err.value.status == 429 and err.value.headers["retry-after"] == "2"
    shedder.check(0, full)
    shedder.check(-1, full)
    shedder.check(5, [endpoint(1)])
    Shedder(SheddingConfig(enabled=False)).check(5, full)
