"""parse: read the body and parse it into a ClientRequest (400, 413)."""

from __future__ import annotations

from kvserve.gateway.context import Receive, RequestContext
from kvserve.gateway.disconnect import CLIENT_CLOSED
from kvserve.gateway.request import RequestParser
from kvserve.openai_error import OpenAIError


class Parse:
    def __init__(self, parser: RequestParser, max_body_bytes: int) -> None:
        self.parser = parser
        self.max_body_bytes = max_body_bytes

    async def run(self, ctx: RequestContext) -> None:
        body = await read_body(ctx.receive, self.max_body_bytes)
        ctx.request = self.parser.parse(ctx.scope["path"], ctx.scope["headers"], body)


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise OpenAIError(CLIENT_CLOSED, "client went away", code="client_disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise OpenAIError(413, f"request body over {limit} bytes", code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
