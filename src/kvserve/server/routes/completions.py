"""POST /v1/completions: prompt as a string, strings, token ids or lists of token ids."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response

from kvserve.server import sse
from kvserve.server.body import read_body
from kvserve.server.constraints import requested_grammar
from kvserve.server.generation import Choice, Generation, collect_or_abort, new_request_id, start_generation, stream_events
from kvserve.server.logprobs import add_completion_entries
from kvserve.server.protocol import CompletionRequest, StreamOptions
from kvserve.server.responses import Completion, CompletionChoice, CompletionLogprobs, Usage
from kvserve.server.sampling import check_context, check_token_ids, to_sampling_params
from kvserve.server.model_version import ModelVersion
from kvserve.server.state import request_log, server_state
from kvserve.structured.spec import StructuredOutputs

router = APIRouter()


@router.post("/v1/completions")
async def create_completion(request: Request) -> Response:
    state, record = server_state(request), request_log(request)
    body = await read_body(request, CompletionRequest)
    version = await state.model_for(request, body.model)
    model = version.name
    record.request_id, record.model, record.stream = new_request_id("cmpl"), model, body.stream
    if state.settings.log_requests:
        record.prompt = body.prompt
    prompts = [version.encode(p) if isinstance(p, str) else p for p in body.prompts()]
    for prompt in prompts:
        check_token_ids(prompt, version.engine.vocab_size, "prompt")
        check_context(len(prompt), body.output_limit(), version.engine.max_model_len, "prompt")
    params = to_sampling_params(body, body.output_limit(), body.logprobs, version.sampling_defaults.values)
    grammar = requested_grammar(body)
    params.structured = StructuredOutputs(grammar) if grammar else None
    timeout = state.timeout_for(body.request_timeout)
    gen = await start_generation(state, version, record, prompts, params, body.priority, timeout)
    echoes = _echo_texts(version, body, prompts)
    headers = {"X-Request-Id": gen.request_id}
    if body.stream:
        return sse.sse_response(stream_events(gen, _chunks(gen, body, model, echoes, version.fingerprint)), headers)
    choices = await collect_or_abort(gen, request)
    completion = Completion(id=gen.request_id, created=gen.created, model=model,
                            choices=[_choice(c, body, echoes[c.index // body.n]) for c in choices], usage=gen.usage(),
                            system_fingerprint=version.fingerprint)
    return Response(completion.model_dump_json(), media_type="application/json", headers=headers)


def _echo_texts(version: ModelVersion, body: CompletionRequest, prompts: list[list[int]]) -> list[str]:
    """Per prompt, the text that `echo` puts before the completion ('' without echo)."""
    if not body.echo:
        return [""] * len(prompts)
    return [p if isinstance(p, str) else version.decode(ids) for p, ids in zip(body.prompts(), prompts)]


def _choice(choice: Choice, body: CompletionRequest, echo: str) -> CompletionChoice:
    logprobs = None
    if body.logprobs is not None:
        logprobs = CompletionLogprobs()
        add_completion_entries(logprobs, choice.token_ids, choice.logprobs, body.logprobs, 0)
    return CompletionChoice(index=choice.index, text=echo + "".join(choice.text), logprobs=logprobs,
                            finish_reason=choice.finish_reason, stop_reason=choice.stop_reason)


async def _chunks(gen: Generation, body: CompletionRequest, model: str, echoes: list[str],
                  fingerprint: str) -> AsyncIterator[bytes]:
    options = body.stream_options or StreamOptions()
    pending_echo = {i: echoes[i // body.n] for i in range(len(gen.choices)) if echoes[i // body.n]}
    offsets = [0] * len(gen.choices)

    plain = body.logprobs is None and not options.continuous_usage_stats  # chunks without models
    fast = sse.ChunkEncoder("text_completion", gen.request_id, gen.created, model,
                            ',"usage":null,"system_fingerprint":' + sse.dumps(fingerprint))

    def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> bytes:
        message = Completion(id=gen.request_id, created=gen.created, model=model, choices=choices, usage=usage,
                             system_fingerprint=fingerprint)
        return sse.event(message.model_dump_json())

    async for choice in gen.deltas():
        delta, index = choice.delta, choice.index
        text = pending_echo.pop(index, "") + delta.text
        if not text and not delta.finished and body.logprobs is None:
            continue  # text held back (a stop string may be starting, or a character is incomplete)
        if plain:
            yield fast.event({"index": index, "text": text, "logprobs": None, "finish_reason": delta.finish_reason,
                              "stop_reason": delta.stop_reason})
            continue
        logprobs = None
        if body.logprobs is not None:
            logprobs = CompletionLogprobs()
            offsets[index] = add_completion_entries(logprobs, delta.token_ids, delta.logprobs or [], body.logprobs,
                                                    offsets[index])
        out = CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=delta.finish_reason,
                               stop_reason=delta.stop_reason)
        yield chunk([out], gen.usage() if options.continuous_usage_stats else None)
    if options.include_usage:
        yield chunk([], gen.usage())
