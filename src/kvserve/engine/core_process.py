"""The engine core process: loads an EngineCore and runs its loop (see core_client).

- reports `EngineInfo` once the model is loaded, or `StartupFailed` with the reason;
- loops: drain every queued command, answer adds with one `Admission`, step while there
  is work and send each step's outputs as one `StepOutputs`, block on input when idle;
- exits when told to (`Shutdown`) or when the parent goes away (its input pipe closes).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from kvserve.config import EngineConfig
from kvserve.engine.core_messages import (
    AbortRequests,
    AddRequests,
    Admission,
    EngineFailed,
    EngineInfo,
    Ping,
    Pong,
    Rejection,
    Shutdown,
    StartupFailed,
    StepOutputs,
)
from kvserve.engine.errors import QueueFullError
from kvserve.engine.request import EngineRequest


def run_core_process(config: EngineConfig, inputs: Connection, outputs: Connection, log_level: str) -> None:
    """Entry point of the core process (spawned)."""
    # the parent decides when we stop: Ctrl-C, or a SIGTERM sent to the whole process group
    # (systemd's KillMode=control-group, a shell entrypoint's `kill 0`), reaches the server,
    # which drains its requests first; if the parent dies, the input pipe closes and we stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
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
            vocab_size=core.info.vocab_size,
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
