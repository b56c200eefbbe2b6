"""Runs an EngineCore in its own process, so that HTTP work never steals time from its loop.

The parent (the API server's event loop) and the core process (core_process) talk over
two one-way `multiprocessing` pipes carrying the messages of core_messages. The parent
side (`CoreClient`) never blocks its event loop on the core: it reads with
`loop.add_reader` and writes messages of a few kilobytes that the core's reader thread
drains at once.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from kvserve.config import EngineConfig
from kvserve.engine.core_messages import EngineInfo, Shutdown, StartupFailed
from kvserve.engine.core_process import run_core_process
from kvserve.engine.errors import EngineDeadError, EngineStartupError


class CoreClient:
    """Parent side of the core process: start it, send commands, receive messages.

    Messages from the core are handed to `on_message` on the event loop's thread; when
    the core process goes away, `on_message` receives an `EngineDeadError`.
    """

    def __init__(self, process: multiprocessing.process.BaseProcess, inputs: Connection,
                 outputs: Connection, info: EngineInfo) -> None:
        self.process = process
        self.info = info
        self._inputs = inputs  # we write commands here
        self._outputs = outputs  # we read core messages here
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self.dead = False

    @classmethod
    def start(cls, config: EngineConfig, timeout: float = 600.0, log_level: str = "info") -> CoreClient:
        """Spawn the core process and wait until it has loaded the model (blocking)."""
        ctx = multiprocessing.get_context("spawn")
        cmd_read, cmd_write = ctx.Pipe(duplex=False)
        out_read, out_write = ctx.Pipe(duplex=False)
        process = ctx.Process(target=run_core_process, args=(config, cmd_read, out_write, log_level),
                              name="kvserve-engine-core", daemon=True)
        process.start()
        cmd_read.close()  # the child holds these ends now; ours would hide its EOF
        out_write.close()
        try:
            info = _wait_for_info(out_read, process, timeout)
        except BaseException:
            _stop_process(process, grace=1.0)
            raise
        return cls(process, cmd_write, out_read, info)

    def attach(self, loop: asyncio.AbstractEventLoop, on_message: Callable[[object], None]) -> None:
        """Deliver the core's messages to on_message from now on, on `loop`."""
        self._loop = loop
        self._on_message = on_message
        loop.add_reader(self._outputs.fileno(), self._drain)
        # uvloop (libuv) makes a watched fd non-blocking; a message larger than the pipe's
        # buffer (a big step's outputs) must still be read whole once its first bytes are in
        os.set_blocking(self._outputs.fileno(), True)
        self._reading = True

    def send(self, message: object) -> None:
        if self.dead:
            raise EngineDeadError("the engine core process is not running")
        try:
            self._inputs.send(message)
        except OSError as exc:
            self._mark_dead(f"lost the engine core process: {exc}")
            raise EngineDeadError("the engine core process is not running") from exc

    def _drain(self) -> None:
        try:
            while self._outputs.poll():
                self._on_message(self._outputs.recv())
        except (EOFError, OSError):
            self._mark_dead(f"engine core process exited (exit code {self.process.exitcode})")

    def _mark_dead(self, reason: str) -> None:
        if self.dead:
            return
        self.dead = True
        self._stop_reading()
        self._on_message(EngineDeadError(reason))

    def _stop_reading(self) -> None:
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self._outputs.fileno())
        self._reading = False

    def close(self, grace: float = 10.0) -> None:
        """Ask the core to stop, wait up to `grace` seconds, then kill it."""
        if not self.dead:
            try:
                self._inputs.send(Shutdown())
            except OSError:
                pass
        self._stop_reading()
        self.dead = True
        _stop_process(self.process, grace)
        self._inputs.close()
        self._outputs.close()


def _wait_for_info(conn: Connection, process: multiprocessing.process.BaseProcess,
                   timeout: float) -> EngineInfo:
    deadline = time.monotonic() + timeout
    while not conn.poll(0.2):
        if not process.is_alive():
            raise EngineStartupError(f"engine core process exited during start-up (exit code {process.exitcode})")
        if time.monotonic() > deadline:
            raise EngineStartupError(f"engine did not start within {timeout:.0f} s")
    try:
        message = conn.recv()
    except EOFError as exc:
        raise EngineStartupError("engine core process exited during start-up") from exc
    if isinstance(message, StartupFailed):
        raise EngineStartupError(message.message)
    if not isinstance(message, EngineInfo):
        raise EngineStartupError(f"unexpected first message from the engine: {message!r}")
    return message


def _stop_process(process: multiprocessing.process.BaseProcess, grace: float) -> None:
    process.join(grace)
    if process.is_alive():  # past the grace it is stuck; it ignores SIGTERM (see core_process), so SIGKILL
        process.kill()
        process.join()
