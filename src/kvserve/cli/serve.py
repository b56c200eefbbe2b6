"""`kvserve serve`: the OpenAI-compatible HTTP server (see docs/server.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kvserve.cli.engine_args import add_engine_args, check_type, engine_config_from_args, load_config_file
from kvserve.config import ConfigError, DeviceUnavailableError, EngineConfig
from kvserve.server.batches.settings import with_batch_policy

# server flags: name -> (type, help); the settings and their defaults live in ServerSettings
SERVER_FLAGS: dict[str, tuple[type, str]] = {
    "host": (str, "interface to listen on (default: 127.0.0.1; 0.0.0.0 for all)"),
    "port": (int, "TCP port (default: 8000)"),
    "api_key": (str, "require 'Authorization: Bearer KEY' on /v1, /tokenize and /detokenize"),
    "admin_key": (str, "require 'Authorization: Bearer KEY' on /admin (hot swap); default: the --api-key"),
    "log_requests": (bool, "put prompt and completion text in the per-request log lines"),
    "request_timeout": (float, "seconds a request may run before it ends with a 408 (default: none)"),
    "shutdown_timeout": (float, "on SIGTERM, seconds in-flight requests get to finish (default: 30)"),
    "log_level": (str, "critical | error | warning | info | debug (default: info)"),
    "max_header_bytes": (int, "bytes of request line and headers per request; 431 past it (default: 65536)"),
    "max_headers": (int, "header fields per request; 431 past it (default: 100)"),
    "header_timeout": (float, "seconds a request's headers may take to arrive; 408 and close after (default: 10)"),
    "otlp_endpoint": (str, "send OpenTelemetry spans to this OTLP HTTP collector, e.g. http://127.0.0.1:4318 "
                           "(default: OTEL_EXPORTER_OTLP_ENDPOINT, else tracing off)"),
    "allow_special_tokens_in_content": (bool, "parse special-token strings (<|im_start|>, <|eot_id|>) in message "
                                              "content and prompt text as control tokens (default: off: as text)"),
    "data_dir": (str, "batch API: where uploaded files, output files and job state live "
                      "(default: ~/.cache/kvserve/batches)"),
    "batch_max_file_bytes": (int, "batch API: largest upload in bytes; 413 past it (default: 200 MiB)"),
    "batch_concurrency": (int, "batch API: batch lines in the engine at once, at the lowest priority; "
                               "0 turns the batch API off (default: 8)"),
    "batch_busy_concurrency": (int, "batch API: batch lines in the engine at once while clients' completion "
                                    "requests are being answered (default: 2)"),
    "batch_store": (str, "batch API: keep job state in Redis, redis://host:port/db[?prefix=NAME] "
                         "(default: SQLite in --data-dir)"),
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
        models = models_from_args(args)
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
        return runner.run_server(models or single_model(engine_config, args), engine_config, settings, sock)
    finally:
        if shape_dir is not None:
            shape_dir.cleanup()


def configs_from_args(args: argparse.Namespace) -> tuple[EngineConfig, Any]:
    """(EngineConfig, ServerSettings) from --config YAML and flags; ConfigError if anything is off.
    The file's `models:` part is read by models_from_args."""
    from kvserve.server.models_config import POOL_KEYS
    from kvserve.server.settings import ServerSettings

    file_values = load_config_file(args.config) if args.config else {}
    known = set(EngineConfig.setting_names()) | set(SERVER_FLAGS) | set(POOL_KEYS)
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {args.config}: {', '.join(unknown)}")
    values = {}
    for name, (kind, _) in SERVER_FLAGS.items():
        if name in file_values:
            values[name] = check_type(name, kind | None, file_values[name])
        if hasattr(args, name):
            values[name] = getattr(args, name)
    settings = ServerSettings(**values)
    return with_batch_policy(engine_config_from_args(args), settings.batch_settings()), settings


def models_from_args(args: argparse.Namespace) -> Any:
    """The ModelsConfig of a --config file with a `models:` list (server/models_config.py),
    or None: the command then serves --model alone. ConfigError if it is wrong."""
    from kvserve.server.models_config import POOL_KEYS, ModelsConfig

    file_values = load_config_file(args.config) if args.config else {}
    pool_values = {k: file_values[k] for k in POOL_KEYS if k in file_values}
    if not pool_values:
        return None
    if hasattr(args, "model") or "model" in file_values:
        raise ConfigError(f"{args.config} lists `models`; --model (or `model:`) serves one model instead: "
                          "use one or the other")
    return ModelsConfig.from_file_values(pool_values)


def single_model(engine_config: EngineConfig, args: argparse.Namespace) -> Any:
    """The ModelsConfig of `--model`: one pinned model; a registry version names itself."""
    from kvserve.engine.async_llm import served_name
    from kvserve.server.model_source import describe_source, is_registry_ref
    from kvserve.server.models_config import ModelSpec, ModelsConfig

    given = getattr(args, "model", None) or (load_config_file(args.config).get("model") if args.config else None)
    label = describe_source(given, None).label if isinstance(given, str) and is_registry_ref(given) else None
    return ModelsConfig((ModelSpec(served_name(engine_config), engine_config.model.model, pinned=True, version=label),))
