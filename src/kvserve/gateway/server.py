"""Running the gateway: uvicorn with SIGHUP reload and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from kvserve.gateway.app import GatewayApp
from kvserve.gateway.audit_admin import audit_admin
from kvserve.gateway.config import ConfigError, GatewayConfig, load_config
from kvserve.gateway.state import GatewayState
from kvserve.http_limits import bounded_http_protocol
from kvserve.tracing import TracingUnavailable, build_tracer

log = logging.getLogger("kvserve.gateway")


class GatewayServer(uvicorn.Server):
    """SIGHUP re-reads the config (a bad file is logged and ignored). SIGTERM marks the
    gateway not ready, waits `drain_delay_s` (so load balancers stop sending), then stops
    accepting and gives in-flight requests `shutdown_grace_s` to finish."""

    def __init__(self, config: uvicorn.Config, state: GatewayState) -> None:
        super().__init__(config)
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        if hasattr(signal, "SIGHUP"):
            self._loop.add_signal_handler(signal.SIGHUP, self.reload)
        await super().startup(sockets)
        if self.started:
            log.info("%s", banner(self.state.config, self.config.host, self.config.port))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        log.info("gateway on %s:%d stopped", self.config.host, self.config.port)

    def reload(self) -> None:
        path = {"path": str(self.state.config_path)}
        try:
            self.state.reload()
        except (ConfigError, RuntimeError) as exc:
            log.error("config reload failed, keeping the running config: %s", exc)
            audit_admin(self.state.backends.audit, "SIGHUP", "/admin/reload", 400, path)
            return
        audit_admin(self.state.backends.audit, "SIGHUP", "/admin/reload", 200, path)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        delay = self.state.config.server.drain_delay_s
        if sig == signal.SIGTERM and delay > 0 and not self.state.draining and self._loop is not None:
            self.state.draining = True
            log.info("SIGTERM: not ready; closing in %.1fs", delay)
            self._loop.call_soon_threadsafe(self._loop.call_later, delay, self._stop, sig, frame)
            return
        self.state.draining = True
        self._stop(sig, frame)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises every signal it handled once it has shut down, so the process
        # would die of SIGTERM (status -15). A drained SIGTERM is the orderly way to stop
        # the gateway: exit 0, as supervisors expect. SIGINT keeps uvicorn's behaviour.
        if sig == signal.SIGTERM and sig in self._captured_signals:
            self._captured_signals.remove(sig)


def banner(config: GatewayConfig, host: str, port: int) -> str:
    """What a client and an operator need to know at start: the models clients may ask for,
    their versions, endpoints and policies, the features on, and the address."""
    lines = [f"kvserve gateway listening on http://{host}:{port} (OpenAI API under /v1)"]
    for name, model in config.models.items():
        for vname, version in model.versions.items():
            upstream = f", upstream model '{version.upstream_model}'" if version.upstream_model else ""
            urls = ", ".join(e.url for e in version.pool.endpoints) or "no endpoints"
            lines.append(f"  model '{name}' version '{vname}' (weight {version.weight:g}{upstream}): "
                         f"{version.pool.policy} over {urls}")
    features = [name for name, on in (("api keys", config.auth.enabled), ("redis", config.redis.url is not None),
                                      ("response cache", config.cache.enabled),
                                      ("resumable streams", config.streams.resumable)) if on]
    lines.append(f"  access: {', '.join(features) or 'open (no keys, limits or cache)'}; "
                 f"admin API {'on' if config.admin.resolved_key() else 'off'}")
    return "\n".join(lines)


def configure_logging(level: str) -> None:
    # every request writes a log line: skip what records collect that the format never shows
    # (the caller's frame, thread and process names; the logging HOWTO's "Optimization")
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("kvserve.gateway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def run(config_path: str | Path, host: str | None = None, port: int | None = None,
        log_level: str = "info", otlp_endpoint: str | None = None) -> int:
    """Serve until SIGTERM/SIGINT. Raises ConfigError on a bad config file or OTLP endpoint."""
    config = load_config(config_path)
    configure_logging(log_level)
    try:
        tracer = build_tracer(otlp_endpoint, "kvserve-gateway")
    except (ValueError, TracingUnavailable) as exc:
        raise ConfigError(f"--otlp-endpoint: {exc}") from None
    state = GatewayState(config, Path(config_path), tracer=tracer)
    uv_config = uvicorn.Config(
        GatewayApp(state),
        host=host or config.server.host,
        port=config.server.port if port is None else port,
        lifespan="on",
        access_log=False,
        log_level="warning" if log_level == "info" else log_level,
        timeout_graceful_shutdown=int(config.server.shutdown_grace_s) or None,
        server_header=False,
        proxy_headers=False,  # the gateway reads no X-Forwarded-*; skip uvicorn's middleware
        http=bounded_http_protocol(),  # httptools with header size, count and read-time limits
    )
    GatewayServer(uv_config, state).run()
    return 0
