"""One API request in the engine: admission, per-choice accumulation, usage, and the
bookkeeping done exactly once at its end (metrics, log record, abort if unfinished)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.requests import Request

from kvserve.engine import (
    ChoiceDelta,
    CompletionDelta,
    EngineDeadError,
    QueueFullError,
    RequestAbortedError,
    RequestStream,
    RequestTimeoutError,
)
from kvserve.outputs import PositionLogprobs
from kvserve.sampling_params import SamplingParams
from kvserve.server import sse
from kvserve.openai_error import OpenAIError
from kvserve.server.errors import from_engine_error
from kvserve.server.metrics import RequestRecord, RequestTimer
from kvserve.server.model_version import ModelVersion
from kvserve.server.request_log import RequestLogRecord
from kvserve.server.responses import Usage
from kvserve.server.state import ServerState
from kvserve.tracing import EngineTimes, current_trace

# errors that end a request which the engine had admitted
RUN_ERRORS = (RequestTimeoutError, EngineDeadError, RequestAbortedError)
_OUTCOMES = {RequestTimeoutError: "timeout", EngineDeadError: "engine_dead", RequestAbortedError: "shutdown"}


@dataclass
class Choice:
    """Everything one choice produced so far."""

    index: int
    text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[PositionLogprobs] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    queue_s: float | None = None
    engine_times: EngineTimes | None = None  # the engine's timestamps, once finished
    spec_tokens: tuple[int, int] = (0, 0)  # speculative tokens proposed and accepted

    def apply(self, delta: CompletionDelta) -> None:
        self.text.append(delta.text)
        self.token_ids.extend(delta.token_ids)
        if delta.logprobs:
            self.logprobs.extend(delta.logprobs)
        self.num_prompt_tokens = delta.num_prompt_tokens
        self.num_cached_tokens = delta.num_cached_tokens
        if delta.finished:
            self.finish_reason, self.stop_reason = delta.finish_reason, delta.stop_reason
            metrics = delta.metrics
            self.engine_times = metrics
            if metrics is not None and metrics.first_scheduled_time is not None:
                self.queue_s = metrics.first_scheduled_time - metrics.arrival_time
            if metrics is not None:
                self.spec_tokens = (metrics.num_draft_tokens, metrics.num_accepted_tokens)


class Generation:
    """An admitted request: iterate `deltas()` (or `collect()`), then `finish()` once."""

    def __init__(self, state: ServerState, stream: RequestStream, record: RequestLogRecord,
                 prompt_lens: list[int], n: int, arrival: float) -> None:
        self.state = state
        self.stream = stream
        self.record = record
        self.request_id = record.request_id or ""
        self.created = int(time.time())
        self.n = n
        self.prompt_lens = prompt_lens
        self.choices = [Choice(i) for i in range(len(prompt_lens) * n)]
        self.timer = RequestTimer(state.metrics, arrival)
        self.trace = current_trace()  # the HTTP request's spans (a no-op without tracing)
        self._finished = False

    async def deltas(self) -> AsyncIterator[ChoiceDelta]:
        async for choice in self.stream:
            self.choices[choice.index].apply(choice.delta)
            self.timer.on_tokens(choice.index, len(choice.delta.token_ids), time.monotonic())
            yield choice

    async def collect(self) -> list[Choice]:
        async for _ in self.deltas():
            pass
        return self.choices

    def usage(self) -> Usage:
        """Prompt tokens count once per prompt, whatever n is; cached ones from its first choice."""
        firsts = self.choices[:: self.n]
        completion = sum(len(c.token_ids) for c in self.choices)
        return Usage.of(sum(self.prompt_lens), completion, sum(c.num_cached_tokens for c in firsts))

    def finish(self, outcome: str, error: str | None = None) -> None:
        """Abort what is unfinished, record metrics and fill the log record (once)."""
        if self._finished:
            return
        self._finished = True
        self.stream.close()
        usage = self.usage()
        reasons = [c.finish_reason or "abort" for c in self.choices]
        e2e = time.monotonic() - self.timer.arrival
        queue = next((c.queue_s for c in self.choices if c.queue_s is not None), None)
        self.state.metrics.request_finished(RequestRecord(usage.prompt_tokens, usage.completion_tokens, reasons, e2e, queue))
        self._trace_engine()
        self._fill_record(outcome, error, usage, reasons)

    def _trace_engine(self) -> None:
        for choice in self.choices:
            if choice.engine_times is not None:
                self.trace.engine(choice.index, choice.engine_times, {
                    "kvserve.prompt_tokens": choice.num_prompt_tokens,
                    "kvserve.cached_tokens": choice.num_cached_tokens,
                    "kvserve.completion_tokens": len(choice.token_ids),
                    "kvserve.finish_reason": choice.finish_reason,
                })

    def _fill_record(self, outcome: str, error: str | None, usage: Usage, reasons: list[str]) -> None:
        record = self.record
        record.outcome, record.error, record.finish_reasons = outcome, error, reasons
        record.prompt_tokens, record.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        record.cached_tokens = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
        if self.timer.first_token is not None:
            record.ttft_s = round(self.timer.first_token - self.timer.arrival, 6)
        if any(c.spec_tokens[0] for c in self.choices):
            record.spec_draft_tokens = sum(c.spec_tokens[0] for c in self.choices)
            record.spec_accepted_tokens = sum(c.spec_tokens[1] for c in self.choices)
        if self.state.settings.log_requests:
            record.completion = ["".join(c.text) for c in self.choices]


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def start_generation(state: ServerState, version: ModelVersion, record: RequestLogRecord,
                           prompts: list[list[int]], params: SamplingParams, priority: int,
                           timeout: float | None) -> Generation:
    """Submit to the version's engine and wait for admission; a refusal becomes the right HTTP error."""
    arrival = time.monotonic()
    try:
        stream = await version.engine.submit(prompts, params, record.request_id or "", priority, timeout)
    except (QueueFullError, ValueError, EngineDeadError, RequestAbortedError) as exc:
        reason = {QueueFullError: "queue_full", EngineDeadError: "engine_dead",
                  RequestAbortedError: "shutdown"}.get(type(exc), "invalid")
        state.metrics.request_rejected(reason)
        record.outcome = "rejected"
        raise from_engine_error(exc) from None
    state.metrics.prompt_tokens.inc(sum(len(p) for p in prompts))
    return Generation(state, stream, record, [len(p) for p in prompts], params.n, arrival)


async def collect_or_abort(gen: Generation, request: Request) -> list[Choice]:
    """Run to the end, unless the client goes away first (then abort and answer 499)."""
    work = asyncio.ensure_future(gen.collect())
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler was cancelled (shutdown past its grace period)
        gen.finish("cancelled")
        raise
    finally:
        for task in (work, gone):
            task.cancel()
    if not work.done() or work.cancelled():
        gen.finish("client_disconnected")
        raise OpenAIError(499, "The client closed the connection.", "client_closed_request")
    try:
        choices = work.result()
    except RUN_ERRORS as exc:
        error = from_engine_error(exc)
        gen.finish(_OUTCOMES[type(exc)], error.message)
        gen.state.metrics.request_rejected(_OUTCOMES[type(exc)])
        raise error from None
    except BaseException as exc:  # a bug: still abort the request in the engine
        gen.finish("error", f"{type(exc).__name__}: {exc}")
        raise
    gen.finish("ok")
    return choices


async def _client_gone(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def stream_events(gen: Generation, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """SSE body: the chunks, then [DONE]; an error mid-stream becomes an error event.

    If the client disconnects, Starlette cancels this generator: the `finally` aborts the
    request in the engine at once, so its KV blocks are freed by the next step.
    """
    try:
        async for chunk in chunks:
            yield chunk
        gen.finish("ok")
        yield sse.DONE
    except RUN_ERRORS as exc:
        error = from_engine_error(exc)
        gen.finish(_OUTCOMES[type(exc)], error.message)
        gen.state.metrics.request_rejected(_OUTCOMES[type(exc)])
        yield sse.error_event(error.body())
        yield sse.DONE
    finally:
        gen.finish("client_disconnected")
