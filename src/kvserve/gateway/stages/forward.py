"""proxy: forward to an endpoint of the chosen version, retrying before the first byte (502,
503, 504), and pass the answer on. With access features on, a tap watches the answer for
usage, the caches and resumable streams."""

from __future__ import annotations

import asyncio

from kvserve.gateway.access_config import StreamsConfig
from kvserve.gateway.context import RequestContext, Send
from kvserve.gateway.disconnect import CLIENT_CLOSED, DisconnectWatch
from kvserve.gateway.proxy import Proxy
from kvserve.gateway.store.kvstore import Store
from kvserve.gateway.store.streams import StreamRecorder, stream_key
from kvserve.gateway.tap import ResponseTap


class Forward:
    def __init__(self, proxy: Proxy, store: Store, streams: StreamsConfig, tapped: bool) -> None:
        self.proxy = proxy
        self.store = store
        self.streams = streams
        self.tapped = tapped

    async def run(self, ctx: RequestContext) -> None:
        request, version = ctx.request, ctx.version
        assert request is not None and version is not None
        send = self.tap(ctx) if self.tapped else ctx.send
        request.trace = ctx.trace.propagate(request.trace)  # the replica's span is a child of this stage's
        tap = ctx.relay.tap
        # a resumable stream runs to its end when the client leaves: it may come back for the rest
        watch = DisconnectWatch(ctx.receive, tap.leave if tap is not None and ctx.relay.recorder is not None else None)
        ctx.answered = True
        try:
            ctx.outcome = await self.proxy.forward(request, version, send, ctx.started)
        except asyncio.CancelledError:
            if not watch.client_left:
                raise
            watch.uncancel()
            ctx.outcome.status, ctx.outcome.error = CLIENT_CLOSED, "client_disconnected"
        finally:
            watch.stop()

    def tap(self, ctx: RequestContext) -> Send:
        """The `send` the proxy writes to: usage, SSE ids and capture for this request."""
        request = ctx.request
        assert request is not None
        options = request.payload.get("stream_options") or {}
        wants_usage = bool(options.get("include_usage"))
        if request.stream and not wants_usage:  # the usage settles the limits; dropped again by the tap
            request.overrides["stream_options"] = {**options, "include_usage": True}
        if request.stream and self.streams.resumable:
            ctx.relay.recorder = StreamRecorder(self.store, stream_key(ctx.identity.tenant, request.request_id),
                                                self.streams.ttl_s, self.streams.finished_ttl_s,
                                                self.streams.max_stream_bytes)
        lookup = ctx.lookup
        assemble = lookup is not None and (lookup.key is not None or lookup.semantic is not None)
        headers = ctx.admission.headers if ctx.admission is not None else []
        ctx.relay.tap = ResponseTap(ctx.send, request.stream, request.path.endswith("chat/completions"), wants_usage,
                                    headers, ctx.relay.recorder, assemble=assemble)
        return ctx.relay.tap
