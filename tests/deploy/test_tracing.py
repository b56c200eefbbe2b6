"""Tracing end to end: the official OpenAI client sends a request with its own
`traceparent` through a real `kvserve gateway` to a real `kvserve serve` (tiny model),
both exporting to an OTLP HTTP collector that this test runs on loopback. The spans
arrive in the client's trace, each with the right parent, the engine's phases inside the
replica's span in time order, and no prompt text anywhere."""

from __future__ import annotations

import gzip
import os
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests.gateway.conftest import make_key
from tests.helpers import SERVE_START_TIMEOUT_S, ServerProcess, answers, free_port, kvserve, wait_until

pytestmark = pytest.mark.slow

SECRET_PROMPT = "tell me about the purple walrus " + secrets.token_hex(8)
ENGINE_PHASES = ("engine.queue", "engine.prefill", "engine.decode")


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]


class Collector:
    """An OTLP HTTP/protobuf trace receiver: POST /v1/traces, decoded with opentelemetry-proto."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                status = 200 if self.path == "/v1/traces" else 404
                if status == 200:
                    collector.receive(body)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def receive(self, body: bytes) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            service = attributes(resource_spans.resource.attributes)["service.name"]
            for scope_spans in resource_spans.scope_spans:
                spans += [Span(service, s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                               s.start_time_unix_nano, s.end_time_unix_nano, attributes(s.attributes))
                          for s in scope_spans.spans]
        with self.lock:
            self.bodies.append(body)
            self.spans += spans

    def trace(self, trace_id: str) -> dict[str, Span]:
        with self.lock:
            return {s.name: s for s in self.spans if s.trace_id == trace_id}

    def stop(self) -> None:
        self.server.shutdown()


def attributes(pairs: Any) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        out[pair.key] = getattr(pair.value, kind) if kind else None
    return out


@dataclass
class Stack:
    collector: Collector
    gateway: ServerProcess
    replica: ServerProcess
    key: str


@pytest.fixture(scope="module")
def stack(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("tracing")
    collector = Collector()
    # export every 100 ms (the standard batch processor setting), not every 5 s
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    port = free_port()
    replica = ServerProcess(kvserve("serve", "--port", str(port), "--model", str(tiny_llama), "--served-model-name",
                                    "tiny", "--max-model-len", "256", "--otlp-endpoint", collector.url),
                            port, tmp / "serve.log", env=env, stop_timeout=30)
    key = make_key(tmp / "keys.yaml", requests_per_minute=100)  # the limit stage runs (in memory)
    config = {"server": {"log_requests": False}, "auth": {"enabled": True, "keys_file": str(tmp / "keys.yaml")},
              "models": {"tiny": {"pool": {"endpoints": [f"http://127.0.0.1:{port}"]}}}}
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
    gw_port = free_port()
    gateway = ServerProcess(kvserve("gateway", "--config", str(tmp / "gateway.yaml"), "--port", str(gw_port),
                                    "--log-level", "warning", "--otlp-endpoint", collector.url),
                            gw_port, tmp / "gateway.log", env=env, stop_timeout=10)
    try:
        replica.start("/ready", SERVE_START_TIMEOUT_S)
        gateway.start("/health", ready=answers)
        yield Stack(collector, gateway, replica, key)
    finally:
        gateway.stop()
        replica.stop()
        collector.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_spans_follow_the_request_from_the_client_to_the_engine(stack, stream):
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    client = openai.OpenAI(base_url=stack.gateway.url + "/v1", api_key=stack.key,
                           default_headers={"traceparent": f"00-{trace_id}-{client_span}-01"})
    messages = [{"role": "user", "content": SECRET_PROMPT}]
    if stream:
        chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, stream=True,
                                                     stream_options={"include_usage": True}))
        completion_tokens = chunks[-1].usage.completion_tokens
    else:
        completion_tokens = client.chat.completions.create(model="tiny", messages=messages,
                                                           max_tokens=6).usage.completion_tokens

    wanted = {"gateway.request", "gateway.route", "gateway.limit", "gateway.forward", "server.request", "engine",
              *ENGINE_PHASES}
    wait_until(lambda: wanted <= set(stack.collector.trace(trace_id)), 15,
               f"spans missing: {wanted - set(stack.collector.trace(trace_id))}", step=0.05)
    spans = stack.collector.trace(trace_id)

    # one trace, parented as the request travelled
    gateway, replica, engine = spans["gateway.request"], spans["server.request"], spans["engine"]
    assert gateway.parent_id == client_span
    assert {s.parent_id for n, s in spans.items() if n.startswith("gateway.") and n != "gateway.request"} == \
        {gateway.span_id}
    assert replica.parent_id == spans["gateway.forward"].span_id
    assert engine.parent_id == replica.span_id
    assert {spans[n].parent_id for n in ENGINE_PHASES} == {engine.span_id}
    assert {s.service for n, s in spans.items() if n.startswith("gateway.")} == {"kvserve-gateway"}
    assert {replica.service, engine.service} == {"kvserve-serve"}

    # the engine's phases in order inside the replica's span; the replica's span starts inside the gateway's
    queue, prefill, decode = (spans[n] for n in ENGINE_PHASES)
    assert queue.start_ns == engine.start_ns and decode.end_ns == engine.end_ns
    assert queue.end_ns == prefill.start_ns and prefill.end_ns == decode.start_ns
    assert all(s.start_ns <= s.end_ns for s in (queue, prefill, decode))
    slack = 2_000_000  # ns: the engine stamps time.time(), the SDK time_ns()
    assert replica.start_ns - slack <= engine.start_ns and engine.end_ns <= replica.end_ns + slack
    # (the replica's span may end a little after the gateway's: it closes once the last byte is written)
    assert gateway.start_ns <= spans["gateway.forward"].start_ns <= replica.start_ns <= gateway.end_ns

    # what the spans say
    assert gateway.attributes["http.response.status_code"] == 200
    assert gateway.attributes["kvserve.model"] == "tiny"
    assert replica.attributes["http.response.status_code"] == 200
    assert replica.attributes["kvserve.stream"] is stream
    assert engine.attributes["kvserve.completion_tokens"] == completion_tokens
    assert engine.attributes["kvserve.prompt_tokens"] > 0

    # never the prompt
    with stack.collector.lock:
        assert not any(SECRET_PROMPT.encode() in body or b"purple walrus" in body for body in stack.collector.bodies)


def test_a_refused_request_ends_its_span_with_the_refusal(stack):
    trace_id = secrets.token_hex(16)
    client = openai.OpenAI(base_url=stack.gateway.url + "/v1", api_key="sk-kvs-nobody-wrong",
                           default_headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    wait_until(lambda: {"gateway.request", "gateway.authenticate"} <= set(stack.collector.trace(trace_id)), 15,
               "no spans for the refused request", step=0.05)
    spans = stack.collector.trace(trace_id)
    assert spans["gateway.authenticate"].attributes["error.type"] == "invalid_api_key"
    assert spans["gateway.request"].attributes["http.response.status_code"] == 401
    assert "gateway.forward" not in spans and "server.request" not in spans


def test_kvserve_runs_without_tracing_and_without_its_packages(tmp_path):
    """Off by default (nothing of the exporter is loaded); asked for without the packages: a clear error."""
    script = (
        "import sys\n"
        "for name in ('opentelemetry.sdk.trace', 'opentelemetry.exporter.otlp.proto.http.trace_exporter'):\n"
        "    sys.modules[name] = None  # as if kvserve[tracing] were not installed\n"
        "from kvserve.tracing import NULL_TRACER, TracingUnavailable, build_tracer\n"
        "assert build_tracer(None, 'x') is NULL_TRACER\n"
        "try:\n"
        "    build_tracer('http://127.0.0.1:4318', 'x')\n"
        "except TracingUnavailable as exc:\n"
        "    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install 'kvserve[tracing]'" in result.stdout


def test_a_bad_endpoint_stops_the_gateway_at_start(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"models": {"m": {"pool": {"endpoints": ["http://127.0.0.1:9"]}}}}))
    result = subprocess.run(kvserve("gateway", "--config", str(config), "--otlp-endpoint", "collector:4318"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--otlp-endpoint" in result.stderr and "http(s) URL" in result.stderr
