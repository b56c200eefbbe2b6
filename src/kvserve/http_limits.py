"""Bounds on what an HTTP client may send before its request reaches the app.

uvicorn's httptools protocol buffers request headers without limit and waits for them
without a deadline: one request with a 256 MB header stalls the event loop for a minute
and grows the process by hundreds of MB, and a client that sends its headers a byte at a
time holds a connection forever. `bounded_http_protocol` is that protocol with three
limits, checked before the parser sees a byte too many:

- `max_bytes` of request line and headers, and `max_count` header fields per request:
  past either, the client gets `431` with an OpenAI-shaped JSON body and the connection
  is closed;
- `read_timeout_s` from a request's first byte (or the connection's opening) to its last
  header: past it, `408` and close (a silent close if nothing was sent).

After such an answer the connection lingers a moment, reading and dropping what the
client still sends, so that the client reads the answer instead of a reset. This module
imports no kvserve code beyond the error type, so the server and the gateway share it:
`uvicorn.Config(app, http=bounded_http_protocol(limits), ...)`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kvserve.openai_error import OpenAIError

LINGER_S = 1.0  # after a refusal, how long the client's remaining bytes are read and dropped


@dataclass(frozen=True)
class HeaderLimits:
    max_bytes: int = 64 * 1024  # request line plus header fields of one request
    max_count: int = 100  # header fields per request
    read_timeout_s: float = 10.0  # from a request's first byte to its last header

    def __post_init__(self) -> None:
        if self.max_bytes < 1024:
            raise ValueError(f"the header byte limit must be at least 1024, got {self.max_bytes}")
        if self.max_count < 1:
            raise ValueError(f"the header count limit must be at least 1, got {self.max_count}")
        if not self.read_timeout_s > 0:
            raise ValueError(f"the header timeout must be positive, got {self.read_timeout_s}")


def bounded_http_protocol(limits: HeaderLimits = HeaderLimits()) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol under `limits` (a class, as `uvicorn.Config(http=...)` wants)."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that counts header bytes and fields and times the header read."""

    limits = HeaderLimits()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        self._refusing = False
        self._refusal: OpenAIError | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._start_head()
        self._arm_head_timer()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusing:
            return  # lingering after a refusal: read and drop
        while data and self._reading_head:
            self._arm_head_timer()
            room = self.limits.max_bytes - self._head_bytes
            if room <= 0:
                self._refuse(_too_large(f"the request line and headers are over {self.limits.max_bytes} bytes"))
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self._refusing or self.transport.is_closing():
                return
        if data:
            super().data_received(data)

    # -- parser callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_count:
            # raising stops the parser; httptools reports it as a parse error (send_400_response)
            self._refusal = _too_large(f"the request has more than {self.limits.max_count} header fields")
            raise _HeaderLimitExceeded()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._start_head()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(self._refusal)

    # -- limits ------------------------------------------------------------------------

    def _start_head(self) -> None:
        self._reading_head = True
        self._head_bytes = 0
        self._header_count = 0

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.read_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._reading_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing sent: nobody to answer
            return
        self._refuse(OpenAIError(408, f"The request headers did not arrive within {self.limits.read_timeout_s} s.",
                                 "invalid_request_error", code="request_header_timeout"))

    def _refuse(self, error: OpenAIError) -> None:
        """Answer `error`, stop parsing, and close once the client had a moment to read it."""
        self._refusing = True
        self._cancel_head_timer()
        self.logger.warning("refused a request: %s", error.message)
        body = error.body_bytes()
        head = (f"HTTP/1.1 {error.status} {_REASONS[error.status]}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
        self.transport.write(head.encode() + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


class _HeaderLimitExceeded(Exception):
    """Raised from a parser callback to stop parsing a request past its header limits."""


_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


def _too_large(what: str) -> OpenAIError:
    return OpenAIError(431, f"Request header fields too large: {what}.", "invalid_request_error",
                       code="request_header_fields_too_large")
