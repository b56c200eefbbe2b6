"""How a request ended, for metrics and the request log."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Outcome:
    """How a forwarded request ended, for metrics and the request log."""

    endpoint: str = "none"  # the endpoint that answered (or failed last)
    status: int = 0  # status sent to the client
    attempts: int = 0
    ttft: float | None = None  # arrival -> first body byte relayed, seconds
    error: str | None = None  # why the last attempt failed, or why a stream broke
    forwarded: bool = False  # the proxy handled it (not a cache hit, a replay or a refusal)
    events: int = 0  # SSE events relayed (streams): time per output token is measured over them
