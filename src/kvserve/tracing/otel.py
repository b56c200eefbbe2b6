"""Tracing with the OpenTelemetry SDK: a private TracerProvider (no global state) whose
spans go to an OTLP HTTP/protobuf endpoint through a batching background thread.

Imported only when tracing is on (kvserve.tracing.build_tracer).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from kvserve import __version__
from kvserve.tracing import TRACE_HEADERS, Attributes, EngineTimes, Headers

_PROPAGATOR = TraceContextTextMapPropagator()


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class OtelTracer:
    """One per process; `service` names it (OTEL_SERVICE_NAME, when set, wins)."""

    def __init__(self, url: str, service: str) -> None:
        name = os.environ.get("OTEL_SERVICE_NAME") or service
        resource = Resource.create({"service.name": name, "service.version": __version__})
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        self.tracer = self.provider.get_tracer("kvserve", __version__)

    def request(self, name: str, headers: Headers, attributes: Attributes) -> OtelTrace:
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in TRACE_HEADERS}
        parent = _PROPAGATOR.extract(carrier)
        root = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=_clean(attributes))
        return OtelTrace(self.tracer, root)

    def shutdown(self) -> None:
        self.provider.shutdown()


class OtelTrace:
    """The spans of one request. Parents are passed explicitly (no ambient context), so
    requests interleaved on one event loop never mix their spans."""

    def __init__(self, tracer: trace.Tracer, root: trace.Span) -> None:
        self.tracer = tracer
        self.root = root
        self.current = root
        self.root_context = trace.set_span_in_context(root)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        span = self.tracer.start_span(name, context=self.root_context)
        self.current = span
        try:
            yield
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            span.end()
            self.current = self.root

    def propagate(self, given: list[tuple[str, str]]) -> list[tuple[str, str]]:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self.current))
        return list(carrier.items())

    def engine(self, index: int, times: EngineTimes, attributes: Attributes) -> None:
        ends = [t for t in (times.last_token_time, times.first_token_time, times.first_scheduled_time) if t]
        end = ends[0] if ends else times.arrival_time
        span = self.tracer.start_span("engine", context=self.root_context, start_time=_ns(times.arrival_time),
                                      attributes=_clean({"kvserve.choice": index, "kvserve.preemptions":
                                                         times.num_preemptions, **attributes}))
        inside = trace.set_span_in_context(span)
        phases = (("engine.queue", times.arrival_time, times.first_scheduled_time),
                  ("engine.prefill", times.first_scheduled_time, times.first_token_time),
                  ("engine.decode", times.first_token_time, times.last_token_time))
        for name, start, stop in phases:
            if start is not None and stop is not None:
                self.tracer.start_span(name, context=inside, start_time=_ns(start)).end(end_time=_ns(stop))
        span.end(end_time=_ns(end))

    def end(self, status: int, attributes: Attributes) -> None:
        self.root.set_attributes(_clean({"http.response.status_code": status, **attributes}))
        if status == 0 or status >= 500:
            self.root.set_status(Status(StatusCode.ERROR))
        self.root.end()


def _clean(attributes: Attributes) -> dict[str, Any]:
    """OpenTelemetry refuses None values: a field not known is left out."""
    return {k: v for k, v in attributes.items() if v is not None}


def _failed(span: Any, exc: BaseException) -> None:
    """A stage that refused or broke: its kind and code, never its message (it may quote input)."""
    code = getattr(exc, "code", None)
    status = getattr(exc, "status", None)
    span.set_attribute("error.type", code if isinstance(code, str) and code else type(exc).__name__)
    if isinstance(status, int):
        span.set_attribute("http.response.status_code", status)
    span.set_status(Status(StatusCode.ERROR))
