"""`kvserve gateway --config gateway.yaml`: one OpenAI endpoint in front of many replicas."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "gateway",
        help="route OpenAI requests over many engine replicas",
        description="Run the gateway: routing, canary versions, health checks, circuit breaking, retries.",
    )
    parser.add_argument("--config", required=True, help="gateway YAML file (see docs/gateway.md)")
    parser.add_argument("--host", default=None, help="listen address (default: server.host from the config)")
    parser.add_argument("--port", type=int, default=None, help="listen port (default: server.port from the config)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--otlp-endpoint", default=None,
                        help="send OpenTelemetry spans to this OTLP HTTP collector, e.g. http://127.0.0.1:4318 "
                             "(default: OTEL_EXPORTER_OTLP_ENDPOINT, else tracing off)")
    parser.set_defaults(func=run_gateway)


def run_gateway(args: argparse.Namespace) -> int:
    from kvserve.gateway.config import ConfigError
    from kvserve.gateway.server import run

    try:
        return run(args.config, args.host, args.port, args.log_level, args.otlp_endpoint)
    except ConfigError as exc:
        print(f"kvserve gateway: {exc}", file=sys.stderr)
        return 2
