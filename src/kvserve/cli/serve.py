"""`kvserve serve`: the OpenAI-compatible HTTP server (see docs/server.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kvserve.cli.engine_args import add_engine_args, check_type, engine_config_from_args, load_config_file
from kvserve.config import ConfigError, DeviceUnavailableError, EngineConfig

# server flags: name -> (type, help); the settings and their defaults live in ServerSettings
SERVER_FLAGS: dict[str, tuple[type, str]] = {
    "host": (str, "interface to listen on (default: 127.0.0.1; 0.0.0.0 for all)"),
    "port": (int, "TCP port (default: 8000)"),
    "api_key": (str, "require 'Authorization: Bearer KEY' on /v1, /tokenize and /detokenize"),
    "log_requests": (bool, "put prompt and completion text in the per-request log lines"),
    "request_timeout": (float, "seconds a request may run before it ends with a 408 (default: none)"),
    "shutdown_timeout": (float, "on SIGTERM, seconds in-flight requests get to finish (default: 30)"),
    "log_level": (str, "critical | error | warning | info | debug (default: info)"),
    "max_header_bytes": (int, "bytes of request line and headers per request; 431 past it (default: 65536)"),
    "max_headers": (int, "header fields per request; 431 past it (default: 100)"),
    "header_timeout": (float, "seconds a request's headers may take to arrive; 408 and close after (default: 10)"),
    "allow_special_tokens_in_content": (bool, "parse special-token strings (<|im_start|>, <|eot_id|>) in message "
                                              "content and prompt text as control tokens (default: off: as text)"),
    "tool_call_parser": (str, "tool-call format: hermes (Qwen2.5/Qwen3) | llama3_json (Llama 3.1) "
                              "(default: the one the chat template speaks)"),
    "reasoning_parser": (str, "qwen3: return <think>...</think> as reasoning_content (default: off)"),
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a model over the OpenAI API",
        description="Serve a model over an OpenAI-compatible HTTP API. Without --model, serves the "
                    "embedded SmolLM2-135M-Instruct.",
    )
    server = parser.add_argument_group("server")
    for name, (kind, help_text) in SERVER_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            server.add_argument(flag, dest=name, action="store_true", default=argparse.SUPPRESS, help=help_text)
        else:
            server.add_argument(flag, dest=name, type=kind, default=argparse.SUPPRESS, help=help_text)
    add_engine_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Checks that are quick come before the model loads: flags (exit 2), the device and the
    port (exit 1); then the model id is resolved (may download) and the server runs."""
    from kvserve.models.shapes import with_shape_dir

    try:
        engine_config, settings = configs_from_args(args)
    except ConfigError as exc:
        print(f"kvserve serve: {exc}", file=sys.stderr)
        return 2
    from kvserve.models.hub import ModelNotFoundError, resolve_model
    from kvserve.server import runner  # imports the web stack only when serving

    runner.configure_logging(settings)
    try:
        engine_config.device.resolved_device()
        sock = runner.bind_socket(settings.host, settings.port)
    except (DeviceUnavailableError, runner.PortInUseError) as exc:
        print(f"kvserve serve: {exc}", file=sys.stderr)
        return runner.EXIT_FAILED
    try:
        engine_config = resolve_model(engine_config)
        engine_config, shape_dir = with_shape_dir(engine_config)  # --arch: a temporary model directory
    except (ConfigError, ModelNotFoundError) as exc:
        sock.close()
        print(f"kvserve serve: {exc}", file=sys.stderr)
        return runner.EXIT_USAGE if isinstance(exc, ConfigError) else runner.EXIT_FAILED
    try:
        return runner.run_server(engine_config, settings, sock)
    finally:
        if shape_dir is not None:
            shape_dir.cleanup()


def configs_from_args(args: argparse.Namespace) -> tuple[EngineConfig, Any]:
    """(EngineConfig, ServerSettings) from --config YAML and flags; ConfigError if anything is off."""
    from kvserve.server.settings import ServerSettings

    file_values = load_config_file(args.config) if args.config else {}
    known = set(EngineConfig.setting_names()) | set(SERVER_FLAGS)
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {args.config}: {', '.join(unknown)}")
    values = {}
    for name, (kind, _) in SERVER_FLAGS.items():
        if name in file_values:
            values[name] = check_type(name, kind | None, file_values[name])
        if hasattr(args, name):
            values[name] = getattr(args, name)
    return engine_config_from_args(args), ServerSettings(**values)
