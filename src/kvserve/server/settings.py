"""Settings of the HTTP server itself (the engine's live in kvserve.config.EngineConfig)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from kvserve.config import ConfigError
from kvserve.http_limits import HeaderLimits
from kvserve.tracing import traces_url
from kvserve.server.batches.settings import BatchSettings

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
TOOL_CALL_PARSERS = ("hermes", "llama3_json")  # kvserve.server.tools.CALL_FORMATS
REASONING_PARSER_NAMES = ("qwen3",)  # kvserve.server.reasoning.REASONING_PARSERS


@dataclass(frozen=True)
class TextOptions:
    """How the server reads client text and model output, the same for every model."""

    allow_special_tokens: bool = False  # special-token strings in content are control tokens
    tool_call_parser: str | None = None  # hermes | llama3_json; None: the format the chat template speaks
    reasoning_parser: str | None = None  # qwen3: <think>…</think> becomes reasoning_content



@dataclass
class ServerSettings:
    host: str = "127.0.0.1"  # interface to listen on (0.0.0.0 for all)
    port: int = 8000  # TCP port
    api_key: str | None = None  # when set, /v1 and tokenizer endpoints need "Authorization: Bearer <key>"
    admin_key: str | None = None  # key of the /admin API (hot swap); None = api_key; neither = admin API off
    log_requests: bool = False  # put prompt and completion text in the per-request log line
    request_timeout: float | None = None  # seconds a request may take (408 after); body's request_timeout overrides
    shutdown_timeout: float = 30.0  # on SIGTERM, seconds in-flight requests get to finish
    log_level: str = "info"  # one of LOG_LEVELS
    allow_special_tokens_in_content: bool = False  # let client text become control tokens (<|im_start|>, ...)
    max_header_bytes: int = 64 * 1024  # request line plus headers of one request (431 past it)
    max_headers: int = 100  # header fields per request (431 past it)
    header_timeout: float = 10.0  # seconds from a request's first byte to its last header (408 and close after)
    otlp_endpoint: str | None = None  # OTLP HTTP collector for traces (None: OTEL_EXPORTER_OTLP_ENDPOINT, else off)
    data_dir: str | None = None  # batch API: files and job state (SQLite); default ~/.cache/kvserve/batches
    batch_max_file_bytes: int = BatchSettings.max_file_bytes  # batch API: larger uploads get 413
    batch_concurrency: int = BatchSettings.concurrency  # batch lines in the engine at once; 0 turns batches off
    batch_busy_concurrency: int = BatchSettings.busy_concurrency  # ... while clients' requests are answered
    batch_store: str | None = None  # batch API: job state in redis://host:port/db; None = SQLite in data_dir
    tool_call_parser: str | None = None  # hermes | llama3_json; None = the format the chat template speaks
    reasoning_parser: str | None = None  # qwen3: <think>…</think> becomes reasoning_content; None = off

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise ConfigError(f"request_timeout must be positive, got {self.request_timeout}")
        if self.shutdown_timeout < 0:
            raise ConfigError(f"shutdown_timeout must be non-negative, got {self.shutdown_timeout}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {LOG_LEVELS}, got {self.log_level!r}")
        if self.tool_call_parser is not None and self.tool_call_parser not in TOOL_CALL_PARSERS:
            raise ConfigError(f"tool_call_parser must be one of {TOOL_CALL_PARSERS}, got {self.tool_call_parser!r}")
        if self.reasoning_parser is not None and self.reasoning_parser not in REASONING_PARSER_NAMES:
            raise ConfigError(f"reasoning_parser must be one of {REASONING_PARSER_NAMES}, "
                              f"got {self.reasoning_parser!r}")
        if self.api_key == "" or self.admin_key == "":
            raise ConfigError("api_key and admin_key must not be empty")
        try:
            self.header_limits()
            if self.otlp_endpoint is not None:
                traces_url(self.otlp_endpoint)
            self.batch_settings()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def text_options(self) -> TextOptions:
        return TextOptions(self.allow_special_tokens_in_content, self.tool_call_parser, self.reasoning_parser)

    def header_limits(self) -> HeaderLimits:
        return HeaderLimits(self.max_header_bytes, self.max_headers, self.header_timeout)

    def batch_settings(self) -> BatchSettings:
        data_dir = Path(self.data_dir) if self.data_dir else None
        return BatchSettings(data_dir, self.batch_max_file_bytes, self.batch_concurrency,
                             busy_concurrency=self.batch_busy_concurrency, store=self.batch_store)

    @staticmethod
    def setting_names() -> list[str]:
        return [f.name for f in fields(ServerSettings)]
