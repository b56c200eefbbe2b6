"""Start the engine, then serve HTTP on uvicorn (uvloop + httptools) until SIGTERM/SIGINT.

Order of events: the port is bound first (a busy port stops the command at once, before
any loading); the pinned and preloaded models load, each in an engine core process of
its own (a start-up failure is printed and the command exits 1 before the port accepts
connections); others load on their first request (server/model_host.py); uvicorn serves on the
bound socket and a banner says where and what; on SIGTERM it stops accepting
connections and gives in-flight requests `shutdown_timeout` seconds, then ends the
unfinished ones with an answer (server/shutdown.py); then the core process is stopped
and the command exits 0. If a pinned model's core process dies (the only model of `--model` is pinned),
the server stops and the command exits 1, so that a supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import time

import uvicorn
import uvloop

from kvserve import __version__
from kvserve.config import EngineConfig
from kvserve.control.model_pool import DoesNotFit
from kvserve.http_limits import bounded_http_protocol
from kvserve.server.app import build_app
from kvserve.server.model_host import LoadFailed, ModelHost
from kvserve.server.model_source import SourceError
from kvserve.server.models_config import ModelsConfig
from kvserve.server.request_log import configure_request_logger
from kvserve.server.settings import ServerSettings
from kvserve.server.shutdown import DrainingServer, graceful_shutdown_timeout
from kvserve.tracing import Tracer, TracingUnavailable, build_tracer

logger = logging.getLogger("kvserve.server")

# exit codes of `kvserve serve` (docs/server.md)
EXIT_OK = 0
EXIT_FAILED = 1  # could not start (port busy, no such device, model not found or not loadable) or the engine died
EXIT_USAGE = 2  # a flag or setting is wrong


class PortInUseError(OSError):
    """The port cannot be bound; the message names it and says how to pick another."""


def configure_logging(settings: ServerSettings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_request_logger()


def bind_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound but not listening yet (connections are refused until the
    model is loaded); PortInUseError when another process holds the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart over TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                exc.errno, f"port {port} on {host} is already in use (another kvserve serve?); "
                f"stop that process or pick another port with --port, e.g. --port {port + 1}") from None
        raise PortInUseError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(False)
    return sock


def run_server(models: ModelsConfig, engine_config: EngineConfig, settings: ServerSettings,
               sock: socket.socket) -> int:
    """Blocking: serve on `sock` until told to stop; returns the process exit code."""
    try:
        tracer = build_tracer(settings.otlp_endpoint, "kvserve-serve")
    except TracingUnavailable as exc:
        logger.error("--otlp-endpoint: %s", exc)
        sock.close()
        return EXIT_USAGE
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(models, engine_config, settings, sock, tracer))
    except KeyboardInterrupt:  # Ctrl-C while the model loads; the core process follows us out
        return 130
    finally:
        sock.close()
        tracer.shutdown()  # spans still buffered go out


async def serve(models: ModelsConfig, engine_config: EngineConfig, settings: ServerSettings,
                sock: socket.socket, tracer: Tracer) -> int:
    started = time.monotonic()
    host = await _start_models(models, engine_config, settings)
    if host is None:
        return EXIT_FAILED
    app = build_app(host, settings, tracer)
    server = DrainingServer(_uvicorn_config(app, settings), host, settings.shutdown_timeout)
    watchdog = asyncio.create_task(_stop_when_engine_dies(host, server))
    _keep_exit_code_zero_on_signals()
    banner = asyncio.create_task(_banner_when_listening(server, host, engine_config, sock, started))
    app.state.batches.start()
    try:
        await server.serve(sockets=[sock])
    finally:
        watchdog.cancel()
        banner.cancel()
        await app.state.batches.stop()
        await host.shutdown()
    logger.info("server stopped")
    return EXIT_FAILED if host.fatal.is_set() else EXIT_OK


async def _start_models(models: ModelsConfig, engine_config: EngineConfig,
                        settings: ServerSettings) -> ModelHost | None:
    """The host with its pinned and preloaded models running, or None after logging why not."""
    logger.info("kvserve %s: %d model(s) on %s, each in an engine process of its own", __version__,
                len(models.models), engine_config.device.resolved_device())
    try:
        host = ModelHost(models, engine_config, settings.text_options(), settings.log_level)
    except SourceError as exc:
        logger.error("%s", exc)
        return None
    try:
        await host.start()
    except (LoadFailed, DoesNotFit) as exc:
        logger.error("the engine failed to start: %s", exc)
        await host.shutdown()
        return None
    return host


async def _banner_when_listening(server: uvicorn.Server, host: ModelHost, config: EngineConfig,
                                 sock: socket.socket, started: float) -> None:
    while not server.started:
        await asyncio.sleep(0.01)
    logger.info(banner(host, config, sock, time.monotonic() - started))


def banner(host: ModelHost, config: EngineConfig, sock: socket.socket, seconds: float) -> str:
    """What a user needs to send the first request: the model names, the URL, and the rest."""
    host_name, port = sock.getsockname()[:2]
    url = f"http://{_url_host(host_name)}:{port}"
    lines = [f"kvserve {__version__} ready in {seconds:.1f} s"]
    for name in host.specs:
        lines.append(f"  model    {name}   (what clients send as \"model\"; {host.label(name)}, "
                     f"{host.state(name).value})")
    lines += [f"  URL      {url}/v1   (OpenAI API; also {url}/health, /ready, /metrics)",
              f"  device   {config.device.resolved_device()}, {_threads(config)}"]
    default = host.current.get(host.default_name)
    if default is not None:
        stats, block_size, engine = default.engine.stats, config.cache.block_size, default.engine
        lines += [f"  KV pool  {stats.num_blocks * block_size:,} tokens ({stats.num_blocks:,} blocks of {block_size}); "
                  f"context {engine.max_model_len:,} tokens",
                  f"  {default.sampling_defaults.describe()}"]
    return "\n".join(lines)


def _threads(config: EngineConfig) -> str:
    threads = config.device.resolved_threads()
    return f"{threads} CPU thread{'s' if threads != 1 else ''} (--threads)"


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"[{host}]" if ":" in host else host


def _uvicorn_config(app: object, settings: ServerSettings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="none",  # we run the loop (uvloop) ourselves
        http=bounded_http_protocol(settings.header_limits()),  # httptools, with header limits
        lifespan="off",
        access_log=False,  # kvserve.requests logs one line per request instead
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=graceful_shutdown_timeout(settings.shutdown_timeout),
    )


async def _stop_when_engine_dies(host: ModelHost, server: uvicorn.Server) -> None:
    await host.fatal.wait()
    logger.error("the engine core process died: %s; stopping the server", host.fatal_reason)
    server.should_exit = True


def _keep_exit_code_zero_on_signals() -> None:
    """uvicorn re-raises the signal that stopped it once it is done, under the handler that
    was installed before it started; with the default one SIGTERM would kill us before the
    engine is shut down and make the exit code -15. A handler that does nothing lets the
    shutdown finish and the command return 0."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
