"""Runs an EngineCore in its own process, so that HTTP work never steals time from its loop.

The parent (the API server's event loop) and the core process talk over two one-way
`multiprocessing` pipes carrying the small picklable messages below. The core process:

- reports `EngineInfo` once the model is loaded, or `StartupFailed` with the reason;
- loops: drain every queued command, answer adds with one `Admission`, step while there
  is work and send each step's outputs as one `StepOutputs`, block on input when idle;
- exits when told to (`Shutdown`) or when the parent goes away (its input pipe closes).

The parent side (`CoreClient`) never blocks its event loop on the core: it reads with
`loop.add_reader` and writes messages of a few kilobytes that the core's reader thread
drains at once.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from kvserve.config import EngineConfig
from kvserve.engine.outputs import EngineOutput, EngineStats
from kvserve.engine.request import EngineRequest
from kvserve.engine.scheduler import QueueFullError

# -- messages: parent -> core --------------------------------------------------------


@dataclass
class AddRequests:
    requests: list[EngineRequest]


@dataclass
class AbortRequests:
    request_ids: list[str]


@dataclass
class Ping:
    """Answered with a Pong between two steps: proves the loop is turning."""

    token: int


@dataclass
class Shutdown:
    pass


# -- messages: core -> parent --------------------------------------------------------


@dataclass
class EngineInfo:
    """What the parent needs to know about the loaded engine."""

    max_model_len: int
    eos_token_id: int | None
    tokenizer_path: str
    model_path: str | None
    stats: EngineStats


@dataclass
class StartupFailed:
    message: str


@dataclass
class EngineFailed:
    """The loop raised; the core process exits after sending this."""

    message: str


@dataclass
class Rejection:
    request_id: str
    kind: str  # "queue_full" | "invalid"
    message: str


@dataclass
class Admission:
    """The fate of the requests of one ingest: accepted into the queue, or rejected."""

    accepted: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    stats: EngineStats | None = None


@dataclass
class StepOutputs:
    """One step's outputs. Pickled compactly: an output that neither ends its request nor
    carries logprobs — nearly all of them — crosses the pipe as a tuple, without its
    metrics (the frontend reads them from the last output only)."""

    outputs: list[EngineOutput]
    stats: EngineStats

    def __reduce__(self) -> tuple:
        rows = [o if o.finish_reason is not None or o.new_logprobs else
                (o.request_id, o.new_token_ids, o.num_prompt_tokens, o.num_cached_tokens) for o in self.outputs]
        return _unpickle_step_outputs, (rows, self.stats)


def _unpickle_step_outputs(rows: list, stats: EngineStats) -> StepOutputs:
    outputs = [row if isinstance(row, EngineOutput) else
               EngineOutput(row[0], row[1], num_prompt_tokens=row[2], num_cached_tokens=row[3]) for row in rows]
    return StepOutputs(outputs, stats)


@dataclass
class Pong:
    token: int


class EngineStartupError(RuntimeError):
    """The core process could not load the engine; the message says why."""


class EngineDeadError(RuntimeError):
    """The core process is gone (crashed, killed or shut down)."""


# -- the core process ----------------------------------------------------------------


def run_core_process(config: EngineConfig, inputs: Connection, outputs: Connection, log_level: str) -> None:
    """Entry point of the core process (spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from kvserve.engine.engine_core import EngineCore

        core = EngineCore(config)
    except BaseException as exc:  # noqa: BLE001 - any failure is reported, not raised
        outputs.send(StartupFailed(f"{type(exc).__name__}: {exc}"))
        return
    outputs.send(
        EngineInfo(
            max_model_len=core.max_model_len,
            eos_token_id=core.eos_token_id,
            tokenizer_path=str(core.tokenizer_path),
            model_path=config.model.model,
            stats=core.stats(),
        )
    )
    sender = OutputSender(outputs)
    failed = not CoreLoop(core, inputs, sender).run()
    sender.close()
    outputs.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if failed else 0)  # skip interpreter teardown (a second or more with torch): nothing to clean


class OutputSender:
    """Sends the core's messages from a thread of its own, in order.

    The loop hands a message over and goes on stepping: a frontend that is slow to read
    (its event loop busy writing streams) does not stall the GPU, and the frontend, once
    behind, merges what piled up into fewer chunks. A backlog of `max_backlog` messages
    makes the loop wait (memory stays bounded). If the frontend is gone, `on_lost` runs.
    """

    _CLOSE = object()

    def __init__(self, outputs: Connection, max_backlog: int = 256) -> None:
        self.outputs = outputs
        self.on_lost: Any = None
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_backlog)
        self._thread = threading.Thread(target=self._run, name="kvserve-core-sender", daemon=True)
        self._thread.start()

    def send(self, message: object) -> None:
        self._queue.put(message)

    def close(self, timeout: float = 30.0) -> None:
        """Send what is queued, then stop."""
        self._queue.put(self._CLOSE)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (message := self._queue.get()) is not self._CLOSE:
            try:
                self.outputs.send(message)
            except OSError:
                if self.on_lost is not None:
                    self.on_lost()
                while self._queue.get() is not self._CLOSE:  # drain, so that senders never block
                    pass
                return


class CoreLoop:
    """ingest → step → send, blocking on input when there is nothing to step."""

    def __init__(self, core: Any, inputs: Connection, outputs: OutputSender) -> None:
        self.core = core
        self.outputs = outputs
        self.inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.stopping = False
        self.changed = False  # an abort or add since the last stats we sent
        outputs.on_lost = lambda: self.inbox.put(Shutdown())  # the frontend is gone: stop
        threading.Thread(target=self._read_inputs, args=(inputs,), daemon=True).start()

    def _read_inputs(self, inputs: Connection) -> None:
        try:
            while True:
                self.inbox.put(inputs.recv())
        except (EOFError, OSError):
            self.inbox.put(Shutdown())  # the parent is gone: stop

    def run(self) -> bool:
        """Loop until told to stop (True) or until the engine raises (False, reported)."""
        try:
            while not self.stopping:
                self._ingest(block=not self.core.has_unfinished_requests())
                if not self.stopping:
                    self._step()
        except Exception:  # noqa: BLE001 - report, then exit
            self.outputs.send(EngineFailed(traceback.format_exc(limit=8)))
            return False
        return True

    def _ingest(self, block: bool) -> None:
        messages = [self.inbox.get()] if block else []
        while True:
            try:
                messages.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        admission = Admission()
        for message in messages:
            self._apply(message, admission)
        if admission.accepted or admission.rejected:
            admission.stats = self.core.stats()
            self.outputs.send(admission)

    def _apply(self, message: object, admission: Admission) -> None:
        if isinstance(message, AddRequests):
            for request in message.requests:
                self._add(request, admission)
        elif isinstance(message, AbortRequests):
            self.core.abort_requests(message.request_ids)
            self.changed = True
        elif isinstance(message, Ping):
            self.outputs.send(Pong(message.token))
        elif isinstance(message, Shutdown):
            self.stopping = True

    def _add(self, request: EngineRequest, admission: Admission) -> None:
        try:
            self.core.add_request(request)
        except QueueFullError as exc:
            admission.rejected.append(Rejection(request.request_id, "queue_full", str(exc)))
        except ValueError as exc:
            admission.rejected.append(Rejection(request.request_id, "invalid", str(exc)))
        else:
            admission.accepted.append(request.request_id)
            self.changed = True

    def _step(self) -> None:
        if self.core.has_unfinished_requests():
            outputs = self.core.step()
            self.outputs.send(StepOutputs(outputs, self.core.stats()))
        elif self.changed:
            self.outputs.send(StepOutputs([], self.core.stats()))
        self.changed = False


# -- the parent side -----------------------------------------------------------------


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
    if process.is_alive():
        process.terminate()
        process.join(5.0)
    if process.is_alive():
        process.kill()
        process.join()
