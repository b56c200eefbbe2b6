"""Optional OpenTelemetry tracing of a request through the gateway, a replica and its engine.

Off by default. On when an OTLP endpoint is given (`--otlp-endpoint` on `kvserve serve` and
`kvserve gateway`, or the standard OTEL_EXPORTER_OTLP_ENDPOINT / _TRACES_ENDPOINT variables);
spans then go over OTLP HTTP/protobuf, in batches, from a background thread. The
opentelemetry packages are the optional extra `kvserve[tracing]` and are imported only
when tracing is on (kvserve.tracing.otel), so kvserve runs without them.

The request path sees one `RequestTrace` per request, whatever the setting: `NULL_TRACE`
(every method a no-op) when tracing is off. Spans carry ids, routes, models, statuses,
token counts and timings, never prompt or completion text.
"""

from __future__ import annotations

import contextvars
import logging
import os
from contextlib import AbstractContextManager, nullcontext
from typing import Mapping, Protocol
from urllib.parse import urlsplit

log = logging.getLogger("kvserve.tracing")

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"  # base URL: /v1/traces is appended
TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"  # the traces URL, used as it is
TRACE_HEADERS = (b"traceparent", b"tracestate")  # W3C trace context
Attributes = Mapping[str, str | int | float | bool]
Headers = list[tuple[bytes, bytes]]


class TracingUnavailable(Exception):
    """An OTLP endpoint was given but the opentelemetry packages are not installed."""


class EngineTimes(Protocol):
    """The engine's timestamps of one request (time.time() seconds; None: not reached)."""

    arrival_time: float
    first_scheduled_time: float | None
    first_token_time: float | None
    last_token_time: float | None
    num_preemptions: int


class RequestTrace(Protocol):
    """The spans of one request in one process: a root span, stages inside it, engine phases."""

    def stage(self, name: str) -> AbstractContextManager[None]:
        """A child span of the root for the `with` block; an exception marks it failed."""
        ...

    def propagate(self, given: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The trace headers to send downstream from the current stage (`given` when off)."""
        ...

    def engine(self, index: int, times: EngineTimes, attributes: Attributes) -> None:
        """An `engine` span with `engine.queue`, `engine.prefill` and `engine.decode` children,
        built after the fact from the engine's timestamps."""
        ...

    def end(self, status: int, attributes: Attributes) -> None:
        """End the root span with the HTTP status sent (0: none was sent)."""
        ...


class Tracer(Protocol):
    def request(self, name: str, headers: Headers, attributes: Attributes) -> RequestTrace:
        """The trace of a request that arrived with `headers` (its traceparent is the parent)."""
        ...

    def shutdown(self) -> None:
        """Export what is still buffered."""
        ...


class NullTrace:
    """Tracing off: nothing is recorded, the client's trace headers pass on unchanged."""

    _block = nullcontext()

    def stage(self, name: str) -> AbstractContextManager[None]:
        return self._block

    def propagate(self, given: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return given

    def engine(self, index: int, times: EngineTimes, attributes: Attributes) -> None:
        return None

    def end(self, status: int, attributes: Attributes) -> None:
        return None


NULL_TRACE = NullTrace()


class NullTracer:
    def request(self, name: str, headers: Headers, attributes: Attributes) -> RequestTrace:
        return NULL_TRACE

    def shutdown(self) -> None:
        return None


NULL_TRACER = NullTracer()


def traces_url(endpoint: str) -> str:
    """The OTLP traces URL of a collector's base URL (kept when it already names /v1/traces)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"OTLP endpoint must be an http(s) URL, got {endpoint!r}")
    return endpoint if parts.path.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"


def configured_url(endpoint: str | None) -> str | None:
    """The traces URL from the flag, else from the standard environment variables, else None (off)."""
    if endpoint:
        return traces_url(endpoint)
    if os.environ.get(TRACES_ENDPOINT_ENV):
        return traces_url(os.environ[TRACES_ENDPOINT_ENV])
    if os.environ.get(ENDPOINT_ENV):
        return traces_url(os.environ[ENDPOINT_ENV])
    return None


def build_tracer(endpoint: str | None, service: str) -> Tracer:
    """NULL_TRACER unless an endpoint is configured. A flag without the packages raises
    TracingUnavailable; an environment variable without them only logs a warning (it may be
    set for other programs)."""
    url = configured_url(endpoint)
    if url is None:
        return NULL_TRACER
    try:
        from kvserve.tracing.otel import OtelTracer  # the optional dependency, loaded only when on
    except ImportError as exc:
        message = f"tracing needs the opentelemetry packages: pip install 'kvserve[tracing]' ({exc})"
        if endpoint:
            raise TracingUnavailable(message) from None
        log.warning("%s; %s is set, tracing stays off", message, ENDPOINT_ENV)
        return NULL_TRACER
    log.info("tracing: spans of %s go to %s", service, url)
    return OtelTracer(url, service)


# the trace of the HTTP request being served (set by the server's tracing middleware)
_current: contextvars.ContextVar[RequestTrace] = contextvars.ContextVar("kvserve_trace", default=NULL_TRACE)


def current_trace() -> RequestTrace:
    return _current.get()


def set_current(trace: RequestTrace) -> contextvars.Token[RequestTrace]:
    return _current.set(trace)


def reset_current(token: contextvars.Token[RequestTrace]) -> None:
    _current.reset(token)
