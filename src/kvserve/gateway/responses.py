"""Answers the gateway gives from its store (cache hits, idempotent repeats), and the end
of a request: real usage settled against the limits, answers stored for next time."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from kvserve.gateway import pii
from kvserve.gateway.cache import Entry, entry_from_json
from kvserve.gateway.keys import KeyRecord
from kvserve.gateway.kvstore import Store
from kvserve.gateway.ratelimit import Charge, Decision, Usage
from kvserve.gateway.redis_link import RedisUnavailable
from kvserve.gateway.request import ClientRequest
from kvserve.gateway.semantic_cache import SemanticQuery
from kvserve.gateway.streams import StreamRecorder
from kvserve.gateway.tap import ResponseTap
from kvserve.openai_error import OpenAIError

if TYPE_CHECKING:
    from kvserve.gateway.access import AccessControl

log = logging.getLogger("kvserve.gateway")
Send = Callable[[dict[str, Any]], Awaitable[None]]
JSON = b"application/json"
MAX_UNSETTLED = 10_000  # settlements kept for retry while Redis is down


@dataclass
class Ticket:
    """One request's passage through access control."""

    headers: list[tuple[bytes, bytes]]  # the client's request headers
    started: float  # monotonic seconds
    record: KeyRecord | None = None  # the API key's record (None without auth)
    tenant: str = "anonymous"
    key_id: str = "-"
    model: str = "unknown"
    charge: Charge | None = None
    decision: Decision | None = None  # set once admitted (None: nothing to settle)
    limit_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    cache_key: str | None = None  # set when the answer may be cached
    idem_key: str | None = None  # set for a request with an Idempotency-Key
    idem_held: bool = False  # this request holds its Idempotency-Key: its answer replaces the hold, or it is freed
    tap: ResponseTap | None = None
    recorder: StreamRecorder | None = None
    cached: Entry | None = None  # the entry a cache hit was answered from
    status: int = 0  # status sent by access control itself (cache hit, replay)
    prompt: str = ""  # the prompt text of a cacheable request (scanned for PII before storing)
    semantic: SemanticQuery | None = None  # set when the answer may go to the semantic cache
    semantic_hit: bool = False  # `cached` came from the semantic cache

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


async def _stored(store: Store, key: str | None) -> bytes | None:
    """The stored value, or None when there is none or Redis cannot be reached."""
    try:
        return await store.get(key or "")
    except RedisUnavailable:
        return None


IN_PROGRESS = b"\x00in-progress"  # the value of a key whose request is running (never a JSON answer)


async def serve_idempotent(store: Store, ticket: Ticket, send: Send, claim_s: float) -> bool:
    """Replay the stored answer to an earlier request with this Idempotency-Key. With none
    stored, the request takes the key (False: go on); while another request holds it, 409.
    Without Redis the request runs as if it had no key."""
    key = ticket.idem_key or ""
    try:
        stored = await store.get(key)
        if stored is None:
            if await store.claim(key, IN_PROGRESS, claim_s):
                ticket.idem_held = True
                return False
            stored = await store.get(key)  # taken in between by another request
    except RedisUnavailable:
        return False
    if stored is None:
        return False  # that request ended without an answer to keep: this one runs, unclaimed
    if stored == IN_PROGRESS:
        raise OpenAIError(409, "a request with this Idempotency-Key is still running; retry once it has finished", code="idempotency_key_in_use")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", JSON), (b"idempotent-replayed", b"true")]})
    await send({"type": "http.response.body", "body": stored})
    ticket.status = 200
    return True


async def serve_cached(store: Store, ticket: Ticket, request: ClientRequest, send: Send) -> bool:
    raw = await _stored(store, ticket.cache_key)
    if raw is None:
        return False
    ticket.cached = Entry.loads(raw)
    await replay_entry(ticket.cached, ticket, request, send, [(b"x-cache", b"hit")])
    return True


async def replay_entry(entry: Entry, ticket: Ticket, request: ClientRequest, send: Send,
                       cache_headers: list[tuple[bytes, bytes]]) -> None:
    """Answer from a cache entry, as JSON or SSE as the request asks."""
    if request.stream:
        options = request.payload.get("stream_options") or {}
        body, kind = entry.as_sse(bool(options.get("include_usage"))), b"text/event-stream"
    else:
        body, kind = entry.as_json(), JSON
    headers = [(b"content-type", kind), *cache_headers,
               (b"x-request-id", request.request_id.encode("latin-1")), *ticket.limit_headers]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    ticket.status = 200


def usage_of(ticket: Ticket) -> Usage:
    if ticket.cached is not None:
        u = ticket.cached.usage or {}
        return Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)), cache_hit=True)
    usage = ticket.tap.json_usage() if ticket.tap is not None else None
    if not usage:
        return Usage()
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


async def finish_ticket(access: AccessControl, ticket: Ticket, status: int) -> None:
    """Settle the real usage and store what later requests may reuse."""
    usage = usage_of(ticket)
    assert ticket.charge is not None and ticket.decision is not None
    m = access.metrics
    m.tenant_requests.labels(ticket.tenant, ticket.model).inc()
    m.tokens.labels(ticket.tenant, ticket.model, "prompt").inc(usage.prompt_tokens)
    m.tokens.labels(ticket.tenant, ticket.model, "completion").inc(usage.completion_tokens)
    if ticket.cached is not None:
        saved = m.semantic_saved if ticket.semantic_hit else m.cache_saved
        saved.labels(ticket.model).inc(ticket.cached.seconds)
    await settle(access, ticket.charge, ticket.decision, usage)
    if status == 200 and ticket.tap is not None and ticket.tap.status == 200:
        await store_answers(access, ticket)
    elif status == 200 and ticket.cached is not None and ticket.idem_held:  # answered from a cache
        try:
            await keep_idempotent_answer(access, ticket, ticket.cached.as_json())
        except RedisUnavailable:
            log.debug("answer not stored: redis down")
    await release_idempotency_key(access.store, ticket)


async def keep_idempotent_answer(access: AccessControl, ticket: Ticket, body: bytes) -> None:
    await access.store.set(ticket.idem_key or "", body, access.config.streams.idempotency_ttl_s)
    ticket.idem_held = False


async def release_idempotency_key(store: Store, ticket: Ticket) -> None:
    """A request that took its Idempotency-Key and leaves no answer frees the key for a retry."""
    if ticket.idem_held:
        try:
            await store.delete(ticket.idem_key or "")
        except RedisUnavailable:
            log.debug("idempotency key not released: redis down (it expires after idempotency_claim_s)")


async def settle(access: AccessControl, charge: Charge, decision: Decision, usage: Usage) -> None:
    """Settle now, and retry settlements that failed while Redis was down."""
    pending = access.unsettled
    try:
        await access.limiter.settle(charge, decision, usage)
        while pending:
            await access.limiter.settle(*pending[-1])
            pending.pop()
    except RedisUnavailable:
        if len(pending) < MAX_UNSETTLED:
            pending.append((charge, decision, usage))


async def store_answers(access: AccessControl, ticket: Ticket) -> None:
    tap, config = ticket.tap, access.config
    assert tap is not None
    try:
        if ticket.idem_key is not None and tap.body:
            await keep_idempotent_answer(access, ticket, bytes(tap.body))
        raw = cache_entry(ticket, config.cache.max_entry_bytes)
        if raw is not None and ticket.cache_key is not None:
            await access.store.set(ticket.cache_key, raw, config.cache.ttl_s)
        if raw is not None and ticket.semantic is not None and access.semantic is not None:
            await access.semantic.add(ticket.semantic, raw)
            access.metrics.semantic_stored.labels(ticket.model).inc()
    except RedisUnavailable:
        log.debug("answer not stored: redis down")


def cache_entry(ticket: Ticket, max_bytes: int) -> bytes | None:
    """The answer as a cache entry, if some cache may keep it (no PII, replayable, not too big)."""
    tap = ticket.tap
    if tap is None or (ticket.cache_key is None and ticket.semantic is None) or pii.find(ticket.prompt):
        return None
    entry = tap.assembler.entry() if tap.assembler is not None else entry_from_json(bytes(tap.body), tap.chat)
    if entry is None:
        return None
    entry.seconds = time.monotonic() - ticket.started
    raw = entry.dumps()
    return raw if len(raw) <= max_bytes else None
