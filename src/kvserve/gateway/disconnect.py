"""Noticing that the client left while its answer is being made."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

Receive = Callable[[], Awaitable[dict[str, Any]]]
CLIENT_CLOSED = 499  # nginx's status for "the client went away"


class DisconnectWatch:
    """Cancels the current task if the client disconnects before the answer is done, so
    that the upstream request is dropped too (the engine then aborts it). With `on_leave`
    (resumable streams) it calls that instead and the answer runs to its end."""

    def __init__(self, receive: Receive, on_leave: Callable[[], None] | None = None) -> None:
        self.on_leave = on_leave
        self.task = asyncio.current_task()
        self.client_left = False
        self.stopped = False
        self.listener = asyncio.ensure_future(receive())
        self.listener.add_done_callback(self._on_message)

    def _on_message(self, listener: asyncio.Future[Any]) -> None:
        # after the answer is complete receive() also returns; stop() has run by then
        if self.stopped or listener.cancelled() or self.task is None:
            return
        self.client_left = True
        if self.on_leave is not None:
            self.on_leave()
        else:
            self.task.cancel()

    def uncancel(self) -> None:
        if self.task is not None and hasattr(self.task, "uncancel"):
            self.task.uncancel()

    def stop(self) -> None:
        self.stopped = True
        if not self.listener.done():
            self.listener.cancel()
