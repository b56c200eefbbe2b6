"""When each request of a run is sent: Poisson-like gamma arrivals, or all at once.

Gaps between requests are gamma distributed with shape `burstiness` and mean
1/`rate`: burstiness 1 is a Poisson process, below 1 requests come in clumps, above 1
they come more evenly. A rate of infinity sends every request at time zero.
"""

from __future__ import annotations

import math
import random


def arrival_offsets(num: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Send times in seconds after the start of the run, first request at 0, non-decreasing."""
    if rate <= 0:
        raise ValueError(f"request rate must be positive (or inf), got {rate}")
    if burstiness <= 0:
        raise ValueError(f"burstiness must be positive, got {burstiness}")
    if math.isinf(rate):
        return [0.0] * num
    rng = random.Random(seed)
    scale = 1.0 / (rate * burstiness)  # shape * scale = mean gap = 1 / rate
    offsets, now = [], 0.0
    for i in range(num):
        if i:
            now += rng.gammavariate(burstiness, scale)
        offsets.append(now)
    return offsets
