"""One request's passage through the pipeline: what each stage found, each in its own small result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from kvserve.gateway.access.keys import KeyLimits, KeyRecord
from kvserve.gateway.access.ratelimit import Charge, Decision
from kvserve.gateway.outcome import Outcome
from kvserve.gateway.request import ClientRequest
from kvserve.gateway.routing.versions import VersionRoute
from kvserve.gateway.store.cache import Entry
from kvserve.gateway.store.semantic_cache import SemanticQuery
from kvserve.gateway.store.streams import StreamRecorder
from kvserve.gateway.tap import ResponseTap
from kvserve.tracing import NULL_TRACE, RequestTrace

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
NO_LIMITS = KeyLimits()


@dataclass(frozen=True)
class Identity:
    """Who is asking (authenticate). Without API keys every request is the anonymous tenant's."""

    tenant: str = "anonymous"
    key_id: str = "-"
    record: KeyRecord | None = None

    @property
    def limits(self) -> KeyLimits:
        return self.record.limits if self.record is not None else NO_LIMITS


ANONYMOUS = Identity()


@dataclass
class Admission:
    """What the limits charged (limit); settled against the real usage at the end."""

    charge: Charge
    decision: Decision
    headers: list[tuple[bytes, bytes]]  # x-ratelimit-* for the answer


@dataclass
class CacheLookup:
    """Where the answer may be stored, or the entry a hit was answered from (cache)."""

    key: str | None = None  # exact-cache key, when the request may be cached
    semantic: SemanticQuery | None = None  # semantic-cache query, when it may go there
    hit: Entry | None = None
    semantic_hit: bool = False
    prompt: str = ""  # scanned for PII before anything is stored


@dataclass
class IdempotencyClaim:
    """This request holds its Idempotency-Key (replay): its answer replaces the hold, or it is freed."""

    key: str
    held: bool = True


@dataclass
class Relay:
    """How the answer was passed on (proxy): the tap that watched it, the recorder of a resumable stream."""

    tap: ResponseTap | None = None
    recorder: StreamRecorder | None = None


@dataclass
class RequestContext:
    """Carried through the stages; each field is set by one stage only."""

    scope: Scope
    receive: Receive
    send: Send  # the client's; wrapped by redact and shadow (the answer passes through them)
    started: float  # monotonic seconds at arrival
    request: ClientRequest | None = None  # parse
    identity: Identity = ANONYMOUS  # authenticate
    claim: IdempotencyClaim | None = None  # replay
    version: VersionRoute | None = None  # route
    admission: Admission | None = None  # limit
    lookup: CacheLookup | None = None  # cache
    relay: Relay = field(default_factory=Relay)  # proxy
    outcome: Outcome = field(default_factory=Outcome)  # the stage that answered
    answered: bool = False  # a stage has answered: the ones after it do not run
    trace: RequestTrace = NULL_TRACE  # the pipeline's spans (tracing on), ended by settle

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return value
        return None

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Answer from the gateway itself (a cache hit, a replay)."""
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})
        self.outcome.status = status
        self.answered = True
