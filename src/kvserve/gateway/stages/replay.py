"""replay: answer a resumed stream (Last-Event-ID) or a repeated Idempotency-Key request
from the store (400, 404, 409, 503), or take the key for this request."""

from __future__ import annotations

from kvserve.gateway.access_config import StreamsConfig
from kvserve.gateway.context import IdempotencyClaim, RequestContext
from kvserve.gateway.errors import bad_request
from kvserve.gateway.metrics import AccessMetrics
from kvserve.gateway.store import idempotency
from kvserve.gateway.store.kvstore import Store
from kvserve.gateway.store.streams import replay, stream_key

JSON = b"application/json"


class Replay:
    def __init__(self, store: Store, streams: StreamsConfig, idle_s: float, metrics: AccessMetrics) -> None:
        self.store = store
        self.streams = streams
        self.idle_s = idle_s
        self.metrics = metrics

    async def run(self, ctx: RequestContext) -> None:
        request = ctx.request
        assert request is not None
        if request.stream and self.streams.resumable:
            await self.resume(ctx)
            return
        given = ctx.header(b"idempotency-key")
        if request.stream or given is None:
            return
        key = f"idem:{ctx.identity.tenant}:{ctx.identity.key_id}:{given.decode('latin-1')[:256]}"
        held, stored = await idempotency.claim(self.store, key, self.streams.idempotency_claim_s)
        if stored is None:
            ctx.claim = IdempotencyClaim(key, held)
        else:
            await ctx.answer(200, [(b"content-type", JSON), (b"idempotent-replayed", b"true")], stored)

    async def resume(self, ctx: RequestContext) -> None:
        last = ctx.header(b"last-event-id")
        if last is None:
            return
        try:
            after = int(last)
        except ValueError:
            raise bad_request("Last-Event-ID must be an integer event id") from None
        request = ctx.request
        assert request is not None
        ctx.outcome.status = 200
        ctx.answered = True
        await replay(self.store, stream_key(ctx.identity.tenant, request.request_id), after, ctx.send,
                     self.streams.poll_s, self.idle_s, [(b"x-request-id", request.request_id.encode("latin-1"))])
        self.metrics.resumed.inc()
