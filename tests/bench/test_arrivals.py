"""Arrival schedules: infinite rate, Poisson mean, gamma burstiness, seeding."""

from __future__ import annotations

import math
import statistics

import pytest

from kvserve.bench.arrivals import arrival_offsets


def gaps(offsets):
    return [b - a for a, b in zip(offsets, offsets[1:])]


def test_infinite_rate_sends_everything_at_once():
    assert arrival_offsets(5, math.inf) == [0.0] * 5


def test_offsets_start_at_zero_and_never_go_back():
    offsets = arrival_offsets(1000, 10.0, seed=3)
    assert offsets[0] == 0.0 and all(g >= 0 for g in gaps(offsets))


def test_mean_gap_is_one_over_rate():
    assert statistics.fmean(gaps(arrival_offsets(20001, 4.0, seed=1))) == pytest.approx(0.25, rel=0.03)


@pytest.mark.parametrize("burstiness, cv", [(1.0, 1.0), (0.25, 2.0), (4.0, 0.5)])
def test_burstiness_sets_the_spread_of_gaps(burstiness, cv):
    g = gaps(arrival_offsets(40001, 2.0, burstiness, seed=2))
    assert statistics.fmean(g) == pytest.approx(0.5, rel=0.05)
    assert statistics.stdev(g) / statistics.fmean(g) == pytest.approx(cv, rel=0.07)


def test_seeded():
    assert arrival_offsets(10, 3.0, seed=5) == arrival_offsets(10, 3.0, seed=5)
    assert arrival_offsets(10, 3.0, seed=5) != arrival_offsets(10, 3.0, seed=6)


@pytest.mark.parametrize("rate, burstiness", [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.0)])
def test_bad_settings_are_refused(rate, burstiness):
    with pytest.raises(ValueError):
        arrival_offsets(3, rate, burstiness)
