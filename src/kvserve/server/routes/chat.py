"""POST /v1/chat/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response

from kvserve.engine import ChoiceDelta
from kvserve.server import sse
from kvserve.server.body import read_body
from kvserve.server.generation import Choice, Generation, collect_or_abort, new_request_id, start_generation, stream_events
from kvserve.server.logprobs import chat_entries
from kvserve.server.protocol import ChatCompletionRequest, StreamOptions
from kvserve.server.responses import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatLogprobs,
    ChatMessageOut,
    DeltaMessage,
    Usage,
)
from kvserve.server.sampling import check_context, to_sampling_params
from kvserve.server.state import request_log, server_state

router = APIRouter()


@router.post("/v1/chat/completions")
async def create_chat_completion(request: Request) -> Response:
    state, record = server_state(request), request_log(request)
    body = await read_body(request, ChatCompletionRequest)
    version = await state.model_for(request, body.model)
    model = version.name
    record.request_id, record.model, record.stream = new_request_id("chatcmpl"), model, body.stream
    if state.settings.log_requests:
        record.prompt = [m.model_dump(exclude_none=True) for m in body.messages]
    prompt = version.chat_prompt(body.messages, body.add_generation_prompt)
    check_context(len(prompt), body.output_limit(), version.engine.max_model_len, "messages")
    params = to_sampling_params(body, body.output_limit(), body.num_logprobs(), version.sampling_defaults.values)
    timeout = state.timeout_for(body.request_timeout)
    gen = await start_generation(state, version, record, [prompt], params, body.priority, timeout)
    headers = {"X-Request-Id": gen.request_id}
    if body.stream:
        return sse.sse_response(stream_events(gen, _chunks(gen, body, model, version.fingerprint)), headers)
    choices = await collect_or_abort(gen, request)
    completion = ChatCompletion(id=gen.request_id, created=gen.created, model=model,
                                choices=[_choice(c, body) for c in choices], usage=gen.usage(),
                                system_fingerprint=version.fingerprint)
    return Response(completion.model_dump_json(), media_type="application/json", headers=headers)


def _choice(choice: Choice, body: ChatCompletionRequest) -> ChatChoice:
    logprobs = None
    if body.logprobs:
        logprobs = ChatLogprobs(content=chat_entries(choice.token_ids, choice.logprobs, body.top_logprobs or 0))
    return ChatChoice(index=choice.index, message=ChatMessageOut(content="".join(choice.text)), logprobs=logprobs,
                      finish_reason=choice.finish_reason, stop_reason=choice.stop_reason)


async def _chunks(gen: Generation, body: ChatCompletionRequest, model: str, fingerprint: str) -> AsyncIterator[bytes]:
    options = body.stream_options or StreamOptions()

    plain = not body.logprobs and not options.continuous_usage_stats  # chunks without models
    fast = sse.ChunkEncoder("chat.completion.chunk", gen.request_id, gen.created, model,
                            ',"usage":null,"system_fingerprint":' + sse.dumps(fingerprint))

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> bytes:
        message = ChatCompletionChunk(id=gen.request_id, created=gen.created, model=model, choices=choices, usage=usage,
                                      system_fingerprint=fingerprint)
        return sse.event(message.model_dump_json())

    yield chunk([ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content="")) for i in range(len(gen.choices))])
    async for choice in gen.deltas():
        delta = choice.delta
        if plain:
            if delta.text or delta.finished:  # else text held back (a stop string may be starting, ...)
                yield fast.event({"index": choice.index, "delta": {"content": delta.text or None}, "logprobs": None,
                                  "finish_reason": delta.finish_reason, "stop_reason": delta.stop_reason})
            continue
        out = _chunk_choice(choice, body)
        if out is not None:
            yield chunk([out], gen.usage() if options.continuous_usage_stats else None)
    if options.include_usage:
        yield chunk([], gen.usage())


def _chunk_choice(choice: ChoiceDelta, body: ChatCompletionRequest) -> ChatChunkChoice | None:
    delta = choice.delta
    if not delta.text and not delta.finished and not (body.logprobs and delta.token_ids):
        return None  # text held back (a stop string may be starting, or a character is incomplete)
    logprobs = None
    if body.logprobs:
        logprobs = ChatLogprobs(content=chat_entries(delta.token_ids, delta.logprobs or [], body.top_logprobs or 0))
    return ChatChunkChoice(index=choice.index, delta=DeltaMessage(content=delta.text or None), logprobs=logprobs,
                           finish_reason=delta.finish_reason, stop_reason=delta.stop_reason)
