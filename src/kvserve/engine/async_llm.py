"""AsyncLLM: the asyncio client of the engine core process, used by the API server.

It owns the frontend half of the engine: the tokenizer, incremental detokenization and
stop strings (OutputProcessor), the fan-out of `n` choices into n engine requests, and
aborts (client gone, timeout, stop string found). The core process only sees token ids.

    stream = await llm.submit(prompt_ids, params, request_id)  # QueueFullError, ValueError
    async for choice in stream:  # ChoiceDelta(index, delta), until every choice ends
        ...
    stream.close()  # aborts whatever has not finished (idempotent; use try/finally)

The core process is started with multiprocessing's "spawn": a script that starts an
AsyncLLM needs the usual `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from kvserve.config import EngineConfig
from kvserve.engine.core_client import CoreClient
from kvserve.engine.core_messages import (
    AbortRequests,
    AddRequests,
    Admission,
    EngineFailed,
    EngineInfo,
    Ping,
    Pong,
    Rejection,
    StepOutputs,
)
from kvserve.engine.errors import EngineDeadError, QueueFullError, RequestAbortedError, RequestTimeoutError
from kvserve.engine.fan_out import fan_out
from kvserve.engine.output_processor import CompletionDelta, OutputProcessor
from kvserve.engine.outputs import EngineStats
from kvserve.engine.request import EngineRequest
from kvserve.sampling_params import SamplingParams


@dataclass
class ChoiceDelta:
    index: int  # which of the n choices
    delta: CompletionDelta


class RequestStream:
    """The deltas of one API request, all of its choices interleaved in arrival order.

    A reader that falls behind (a busy event loop, a slow client) gets what piled up for
    a choice as a single delta: fewer, larger chunks instead of a growing backlog.
    """

    def __init__(self, llm: AsyncLLM, child_ids: list[str], deadline: float | None, timeout: float | None) -> None:
        self._llm = llm
        self.child_ids = child_ids
        self._unfinished = set(child_ids)
        self._items: deque[ChoiceDelta | BaseException] = deque()
        self._arrived = asyncio.Event()
        self._deadline = deadline
        self._timeout = timeout
        self.admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed = False

    @property
    def finished(self) -> bool:
        return not self._unfinished

    def _put(self, item: ChoiceDelta | BaseException) -> None:
        if isinstance(item, ChoiceDelta) and item.delta.finished:
            self._unfinished.discard(item.delta.request_id)
        self._items.append(item)
        self._arrived.set()

    def _fail(self, error: BaseException) -> None:
        if not self.admitted.done():
            self.admitted.set_exception(error)
        self._put(error)

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> ChoiceDelta:
        if not self._items and self.finished:
            raise StopAsyncIteration
        item = await self._next_item()
        if isinstance(item, BaseException):
            self.close()
            raise item
        if self._items:
            item = self._merge_queued(item)
        return item

    def _merge_queued(self, item: ChoiceDelta) -> ChoiceDelta:
        """`item` joined by every queued delta of its choice (other choices keep their order)."""
        others: deque[ChoiceDelta | BaseException] = deque()
        for queued in self._items:
            if isinstance(queued, ChoiceDelta) and queued.index == item.index:
                item = ChoiceDelta(item.index, item.delta.then(queued.delta))
            else:
                others.append(queued)
        self._items = others
        return item

    async def _next_item(self) -> ChoiceDelta | BaseException:
        while not self._items:
            self._arrived.clear()
            if self._deadline is None:
                await self._arrived.wait()
                continue
            try:
                await asyncio.wait_for(self._arrived.wait(), max(0.0, self._deadline - time.monotonic()))
            except asyncio.TimeoutError:
                self.close()
                raise RequestTimeoutError(
                    f"the request did not finish within its timeout of {self._timeout:g} s") from None
        return self._items.popleft()

    def close(self) -> None:
        """Abort every choice that has not finished; forget the request."""
        if self._closed:
            return
        self._closed = True
        self._llm._release(self)


class AsyncLLM:
    """Frontend of an engine whose core runs in another process (see core_client)."""

    def __init__(self, client: CoreClient, tokenizer, served_model_name: str) -> None:
        self.client = client
        self.info: EngineInfo = client.info
        self.tokenizer = tokenizer
        self.served_model_name = served_model_name
        self.stats: EngineStats = client.info.stats  # latest snapshot from the core
        self.dead = asyncio.Event()  # set when the core process is gone
        self.dead_reason = ""
        self._processor = OutputProcessor(tokenizer)
        self._streams: dict[str, tuple[RequestStream, int]] = {}  # engine request id -> (stream, index)
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._ping_ids = itertools.count()
        client.attach(asyncio.get_running_loop(), self._on_message)

    @classmethod
    async def start(cls, config: EngineConfig, start_timeout: float = 600.0, log_level: str = "info") -> AsyncLLM:
        """Start the core process and load the tokenizer (at the same time when its place is known)."""
        from kvserve.tokenizer import load_tokenizer

        known = config.model.tokenizer or config.model.model
        early = asyncio.ensure_future(asyncio.to_thread(load_tokenizer, known)) if known else None
        if early is not None:
            early.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "unretrieved"
        client = await asyncio.to_thread(CoreClient.start, config, start_timeout, log_level)
        try:
            tokenizer = await (early or asyncio.to_thread(load_tokenizer, client.info.tokenizer_path))
        except BaseException:
            client.close(grace=2.0)
            raise
        return cls(client, tokenizer, served_name(config))

    @property
    def max_model_len(self) -> int:
        return self.info.max_model_len

    @property
    def vocab_size(self) -> int:
        return self.info.vocab_size

    @property
    def num_unfinished(self) -> int:
        return len(self._streams)

    # -- requests ----------------------------------------------------------------

    async def submit(self, prompts: list[list[int]], params: SamplingParams, request_id: str,
                     priority: int = 0, timeout: float | None = None) -> RequestStream:
        """Queue a request in the core; returns once the core has admitted all of it.

        Every prompt gets `params.n` choices, each its own engine request; choice
        `k * n + i` is the i-th sample of prompt k. Raises QueueFullError when the core's
        waiting queue is full, ValueError when it refuses a prompt, EngineDeadError when
        the core is gone.
        """
        if self.client.dead:
            raise EngineDeadError(self.dead_reason or "the engine core process is not running")
        deadline = None if timeout is None else time.monotonic() + timeout
        requests = self._engine_requests(prompts, params, request_id, priority)
        stream = RequestStream(self, [r.request_id for r in requests], deadline, timeout)
        for index, req in enumerate(requests):
            self._streams[req.request_id] = (stream, index)
            self._processor.add_request(req.request_id, req.prompt_token_ids, req.sampling_params)
        try:
            self.client.send(AddRequests(requests))
            await stream.admitted
        except BaseException:
            stream.close()
            raise
        return stream

    def _engine_requests(self, prompts: list[list[int]], params: SamplingParams, request_id: str,
                         priority: int) -> list[EngineRequest]:
        """One engine request per choice, in choice order (prompt-major)."""
        requests = []
        for k, prompt in enumerate(prompts):
            prompt_id = request_id if len(prompts) == 1 else f"{request_id}-p{k}"
            for child_id, child_params in fan_out(prompt_id, params):
                requests.append(EngineRequest(child_id, list(prompt), child_params, priority=priority,
                                              eos_token_id=self.info.eos_token_id))
        return requests

    async def generate(self, prompt_token_ids: list[int], params: SamplingParams, request_id: str,
                       priority: int = 0, timeout: float | None = None) -> AsyncIterator[ChoiceDelta]:
        """submit() and iterate; aborts the request if the caller stops early or is cancelled."""
        stream = await self.submit([prompt_token_ids], params, request_id, priority, timeout)
        try:
            async for choice in stream:
                yield choice
        finally:
            stream.close()

    def abort_all(self, reason: str) -> None:
        """End every open request: its reader gets RequestAbortedError(reason) and the core
        drops it (admitted or not)."""
        for stream in {id(s): s for s, _ in self._streams.values()}.values():
            stream._fail(RequestAbortedError(reason))

    def _release(self, stream: RequestStream) -> None:
        unfinished = [cid for cid in stream.child_ids if cid in self._streams]  # finished ones are gone
        for cid in stream.child_ids:
            self._streams.pop(cid, None)
            self._processor.abort(cid)
        if unfinished and not self.client.dead:
            self._send_quietly(AbortRequests(unfinished))

    def _send_quietly(self, message: object) -> None:
        try:
            self.client.send(message)
        except EngineDeadError:
            pass  # nothing left to abort

    # -- messages from the core --------------------------------------------------

    def _on_message(self, message: object) -> None:
        if isinstance(message, StepOutputs):
            self._on_outputs(message)
        elif isinstance(message, Admission):
            self._on_admission(message)
        elif isinstance(message, Pong):
            self._resolve_ping(message.token)
        elif isinstance(message, EngineFailed):
            self._on_dead(EngineDeadError(f"the engine loop failed:\n{message.message}"))
        elif isinstance(message, EngineDeadError):
            self._on_dead(message)

    def _on_outputs(self, message: StepOutputs) -> None:
        self.stats = message.stats
        processed = self._processor.process(message.outputs)
        for delta in processed.deltas:
            entry = self._streams.get(delta.request_id)
            if entry is not None:
                entry[0]._put(ChoiceDelta(entry[1], delta))
                if delta.finished:
                    del self._streams[delta.request_id]
        if processed.abort_ids:
            self._send_quietly(AbortRequests(processed.abort_ids))

    def _on_admission(self, message: Admission) -> None:
        if message.stats is not None:
            self.stats = message.stats
        for rejection in message.rejected:  # first: a request with one refused choice fails
            stream = self._stream_of(rejection.request_id)
            if stream is not None:
                stream._fail(_rejection_error(rejection))
        for request_id in message.accepted:
            stream = self._stream_of(request_id)
            if stream is not None and not stream.admitted.done() and request_id == stream.child_ids[-1]:
                stream.admitted.set_result(None)

    def _stream_of(self, request_id: str) -> RequestStream | None:
        entry = self._streams.get(request_id)
        return entry[0] if entry is not None else None

    def _on_dead(self, error: EngineDeadError) -> None:
        self.dead_reason = str(error)
        for stream in {id(s): s for s, _ in self._streams.values()}.values():
            stream._fail(error)
        for future in self._pings.values():
            if not future.done():
                future.set_exception(error)
        self.dead.set()

    # -- health and shutdown -----------------------------------------------------

    async def check_alive(self, timeout: float = 5.0) -> bool:
        """True when the core loop answers a ping within `timeout` (it answers between steps)."""
        if self.client.dead:
            return False
        token = next(self._ping_ids)
        future = self._pings[token] = asyncio.get_running_loop().create_future()
        try:
            self.client.send(Ping(token))
            await asyncio.wait_for(future, timeout)
            return True
        except (asyncio.TimeoutError, EngineDeadError):
            return False
        finally:
            self._pings.pop(token, None)

    def _resolve_ping(self, token: int) -> None:
        future = self._pings.get(token)
        if future is not None and not future.done():
            future.set_result(None)

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop the core process (in-flight requests should have finished by now)."""
        await asyncio.to_thread(self.client.close, grace)
        self._on_dead(EngineDeadError("the engine was shut down"))


def served_name(config: EngineConfig) -> str:
    """The model name the API answers to: --served-model-name, else --model as given."""
    if config.model.served_model_name:
        return config.model.served_model_name
    return config.model.model or DEFAULT_MODEL_NAME


DEFAULT_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the embedded default model


def _rejection_error(rejection: Rejection) -> Exception:
    if rejection.kind == "queue_full":
        return QueueFullError(rejection.message)
    return ValueError(rejection.message)
