"""SIGTERM with requests in flight: a grace period, then every unfinished request still
gets an answer (a whole answer a 503, a stream an error event and `data: [DONE]`)."""

from __future__ import annotations

import asyncio
import math
import socket

import uvicorn

from kvserve.server.model_host import ModelHost

ANSWER_S = 2  # after the grace period, how long the ended requests get to write their answers


def graceful_shutdown_timeout(grace_s: float) -> int:
    """uvicorn's own limit, past which it cancels handlers (a bare 500): later than ours."""
    return math.ceil(grace_s) + ANSWER_S


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that, `grace_s` seconds into its shutdown, ends every open engine
    request itself (RequestAbortedError, which handlers answer with 503), before uvicorn's
    own timeout (`graceful_shutdown_timeout`) would cancel the handlers mid-answer."""

    def __init__(self, config: uvicorn.Config, host: ModelHost, grace_s: float) -> None:
        super().__init__(config)
        self._host = host
        self._grace_s = grace_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        ender = asyncio.create_task(self._end_requests_after_grace())
        try:
            await super().shutdown(sockets)
        finally:
            ender.cancel()

    async def _end_requests_after_grace(self) -> None:
        await asyncio.sleep(self._grace_s)
        self._host.abort_all("the server is shutting down")
