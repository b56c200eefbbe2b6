"""Start the engine, then serve HTTP on uvicorn (uvloop + httptools) until SIGTERM/SIGINT.

Order of events: the engine core process loads the model (a start-up failure is printed
and the command exits 1 before any port is opened); uvicorn serves; on SIGTERM it stops
accepting connections and gives in-flight requests `shutdown_timeout` seconds, then ends
the unfinished ones with an answer (server/shutdown.py); then the core process is stopped
and the command exits 0. If the core process dies, the server stops and the command
exits 1, so that a supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import uvicorn
import uvloop

from kvserve.config import EngineConfig
from kvserve.engine import AsyncLLM, EngineStartupError
from kvserve.http_limits import bounded_http_protocol
from kvserve.server.app import build_app
from kvserve.server.request_log import configure_request_logger
from kvserve.server.settings import ServerSettings
from kvserve.server.shutdown import DrainingServer, graceful_shutdown_timeout
from kvserve.tokenizer import TokenizerError

logger = logging.getLogger("kvserve.server")


def run_server(engine_config: EngineConfig, settings: ServerSettings) -> int:
    """Blocking: serve until told to stop; returns the process exit code."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_request_logger()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(engine_config, settings))
    except KeyboardInterrupt:  # Ctrl-C while the model loads; the core process follows us out
        return 130


async def serve(engine_config: EngineConfig, settings: ServerSettings) -> int:
    try:
        engine = await AsyncLLM.start(engine_config, log_level=settings.log_level)
    except (EngineStartupError, TokenizerError) as exc:
        logger.error("the engine failed to start: %s", exc)
        return 1
    server = DrainingServer(_uvicorn_config(build_app(engine, settings), settings), engine, settings.shutdown_timeout)
    watchdog = asyncio.create_task(_stop_when_engine_dies(engine, server))
    _keep_exit_code_zero_on_signals()
    try:
        await server.serve()
    finally:
        watchdog.cancel()
        engine_died = engine.dead.is_set()
        await engine.shutdown()
    logger.info("server stopped")
    return 1 if engine_died else 0


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


async def _stop_when_engine_dies(engine: AsyncLLM, server: uvicorn.Server) -> None:
    await engine.dead.wait()
    logger.error("the engine core process died: %s; stopping the server", engine.dead_reason)
    server.should_exit = True


def _keep_exit_code_zero_on_signals() -> None:
    """uvicorn re-raises the signal that stopped it once it is done, under the handler that
    was installed before it started; with the default one SIGTERM would kill us before the
    engine is shut down and make the exit code -15. A handler that does nothing lets the
    shutdown finish and the command return 0."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
