"""POST /v1/chat/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response

from kvserve.engine import ChoiceDelta
from kvserve.server import sse
from kvserve.server.body import read_body
from kvserve.server.chat_output import ChatOutput, ChatParts, split_answer
from kvserve.server.chat_plan import ChatPlan, plan_chat
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
    FunctionCallDelta,
    FunctionCallOut,
    ToolCallDelta,
    ToolCallOut,
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
    plan = plan_chat(version, body)
    check_context(len(plan.prompt), body.output_limit(), version.engine.max_model_len, "messages")
    params = to_sampling_params(body, body.output_limit(), body.num_logprobs(), version.sampling_defaults.values)
    params.structured = plan.structured
    timeout = state.timeout_for(body.request_timeout)
    gen = await start_generation(state, version, record, [plan.prompt], params, body.priority, timeout)
    headers = {"X-Request-Id": gen.request_id}
    if body.stream:
        return sse.sse_response(stream_events(gen, _chunks(gen, body, model, plan, version.fingerprint)), headers)
    choices = await collect_or_abort(gen, request)
    completion = ChatCompletion(id=gen.request_id, created=gen.created, model=model,
                                choices=[_choice(c, body, plan) for c in choices], usage=gen.usage(),
                                system_fingerprint=version.fingerprint)
    return Response(completion.model_dump_json(), media_type="application/json", headers=headers)


def _choice(choice: Choice, body: ChatCompletionRequest, plan: ChatPlan) -> ChatChoice:
    logprobs = None
    if body.logprobs:
        logprobs = ChatLogprobs(content=chat_entries(choice.token_ids, choice.logprobs, body.top_logprobs or 0))
    answer = split_answer("".join(choice.text), plan.think, plan.call_format)
    calls = [ToolCallOut(id=c.id, function=FunctionCallOut(name=c.name, arguments=c.arguments)) for c in answer.calls]
    message = ChatMessageOut(content=answer.content, reasoning_content=answer.reasoning, tool_calls=calls or None)
    return ChatChoice(index=choice.index, message=message, logprobs=logprobs,
                      finish_reason=_finish_reason(choice.finish_reason, bool(calls)), stop_reason=choice.stop_reason)


def _finish_reason(reason: str | None, called: bool) -> str | None:
    """OpenAI's "tool_calls" for an answer that ended in calls."""
    return "tool_calls" if called and reason == "stop" else reason


async def _chunks(gen: Generation, body: ChatCompletionRequest, model: str, plan: ChatPlan,
                  fingerprint: str) -> AsyncIterator[bytes]:
    options = body.stream_options or StreamOptions()
    outputs = [ChatOutput(plan.think, plan.call_format) for _ in gen.choices]

    # chunks without models: no logprobs, usage, reasoning or tools
    plain = not body.logprobs and not options.continuous_usage_stats and outputs[0].plain
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
        out = _chunk_choice(choice, body, outputs[choice.index])
        if out is not None:
            yield chunk([out], gen.usage() if options.continuous_usage_stats else None)
    if options.include_usage:
        yield chunk([], gen.usage())


def _chunk_choice(choice: ChoiceDelta, body: ChatCompletionRequest, output: ChatOutput) -> ChatChunkChoice | None:
    delta = choice.delta
    parts = output.feed(delta.text)
    if delta.finished:
        parts = _joined(parts, output.finish())
    if not parts and not delta.finished and not (body.logprobs and delta.token_ids):
        return None  # text held back (a stop string or a tag may be starting, or a character is incomplete)
    logprobs = None
    if body.logprobs:
        logprobs = ChatLogprobs(content=chat_entries(delta.token_ids, delta.logprobs or [], body.top_logprobs or 0))
    calls = [ToolCallDelta(index=c.index, id=c.id, type="function" if c.id else None,
                           function=FunctionCallDelta(name=c.name, arguments=c.arguments)) for c in parts.calls]
    message = DeltaMessage(content=parts.content or None, reasoning_content=parts.reasoning or None,
                           tool_calls=calls or None)
    return ChatChunkChoice(index=choice.index, delta=message, logprobs=logprobs,
                           finish_reason=_finish_reason(delta.finish_reason, bool(output.calls)),
                           stop_reason=delta.stop_reason)


def _joined(first: ChatParts, last: ChatParts) -> ChatParts:
    return ChatParts(first.reasoning + last.reasoning, first.content + last.content, first.calls + last.calls)
