"""Shadow requests: a copy of a client's request sent to a candidate version in the
background, its answer compared with the one the client got.

Nothing here is on the client's path: the copy runs as its own task, after the primary
request has been sent, through the same proxy (the candidate's pool, breakers and
retries) into a sink; it never touches the tenant's limits or usage, and any failure,
timeout or slowness of the candidate only counts in the report. At most `max_in_flight`
copies are open; a request that finds them all busy is not copied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Coroutine

from kvserve.gateway.metrics import GatewayMetrics
from kvserve.gateway.output_config import ShadowConfig
from kvserve.gateway.proxy import Proxy
from kvserve.gateway.quality.book import Comparison, QualityBook
from kvserve.gateway.quality.capture import Capture
from kvserve.gateway.quality.compare import compare
from kvserve.gateway.request import ClientRequest
from kvserve.gateway.routing.versions import VersionRoute
from kvserve.gateway.store.semantic_cache import Embedder

log = logging.getLogger("kvserve.gateway")


class Mirror:
    """One per gateway process (kept across reloads): the copies in flight and the book they report to."""

    def __init__(self, book: QualityBook, clock: Callable[[], float] = time.monotonic) -> None:
        self.book = book
        self.clock = clock
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self.tasks)

    async def close(self) -> None:
        """At shutdown: copies still open are dropped (they only ever fed the report)."""
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5)

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, request: ClientRequest, primary: VersionRoute, capture: Capture, candidate: VersionRoute,
                  proxy: Proxy, config: ShadowConfig, embedder: Embedder | None, metrics: GatewayMetrics) -> None:
        """Send the copy, wait for both answers, record the comparison (or why there is none)."""
        model, name = candidate.model, candidate.name
        try:
            reason = await self.compare(request, primary, capture, candidate, proxy, config, embedder, metrics)
        except Exception:  # a bug in the shadow path must not surface anywhere else
            log.exception("shadow request failed")
            reason = "error"
        metrics.output.shadow.labels(model, name, "compared" if reason is None else "failed").inc()
        if reason is not None:
            self.book.failed(model, name, reason)

    async def compare(self, request: ClientRequest, primary: VersionRoute, capture: Capture, candidate: VersionRoute,
                      proxy: Proxy, config: ShadowConfig, embedder: Embedder | None,
                      metrics: GatewayMetrics) -> str | None:
        """None when compared, else the reason there is no comparison."""
        sink = Capture(None, capture.chat, self.clock)
        try:
            await asyncio.wait_for(proxy.forward(request, candidate, sink, sink.started), config.timeout_s)
        except asyncio.TimeoutError:
            return "timeout"
        shadow = sink.answer()
        if shadow is None:
            return "shadow_error" if sink.status != 200 else "shadow_unreadable"
        try:
            await asyncio.wait_for(capture.done.wait(), config.timeout_s)
        except asyncio.TimeoutError:
            return "primary_unfinished"
        answer = capture.answer()
        if answer is None:
            return "primary_error"
        greedy = request.payload.get("temperature") == 0
        result = await compare(request.request_id, primary.name, answer, shadow, greedy,
                               embedder if config.similarity else None)
        self.book.of(candidate.model, candidate.name).add(result)
        count(metrics, candidate, result)
        return None


def count(metrics: GatewayMetrics, candidate: VersionRoute, c: Comparison) -> None:
    """The comparison in the metrics: the admin report's figures, summed over gateways."""
    m, labels = metrics.output, (candidate.model, candidate.name)
    if c.exact is not None:
        m.shadow_greedy.labels(*labels).inc()
    if c.exact:
        m.shadow_exact.labels(*labels).inc()
    if c.similarity is not None:
        m.shadow_similarity.labels(*labels).observe(c.similarity)
    for answer, chars, seconds in (("primary", c.primary_chars, c.primary_s), ("shadow", c.shadow_chars, c.shadow_s)):
        m.shadow_chars.labels(*labels, answer).inc(chars)
        m.shadow_seconds.labels(*labels, answer).inc(seconds)
