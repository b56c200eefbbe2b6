"""Turns the engine's per-step token outputs into text deltas, on the frontend side.

Stop strings are found here, after detokenization; the ids of requests they ended come
back in `abort_ids` so that the caller aborts them in the engine core.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kvserve.engine.detokenizer import IncrementalDetokenizer
from kvserve.engine.outputs import EngineOutput
from kvserve.engine.request import FinishReason, RequestMetrics
from kvserve.engine.scheduler_output import TokenLogprobs
from kvserve.outputs import Logprob, PositionLogprobs
from kvserve.sampling_params import SamplingParams


@dataclass
class CompletionDelta:
    """What one step added to one request."""

    request_id: str
    text: str  # new text since the last delta
    token_ids: list[int]  # new token ids
    logprobs: list[PositionLogprobs] | None  # one entry per new token, if asked for
    finish_reason: str | None  # "stop" | "length" | "abort" once finished
    stop_reason: int | str | None
    num_prompt_tokens: int
    num_output_tokens: int  # cumulative
    num_cached_tokens: int
    metrics: RequestMetrics | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def then(self, later: CompletionDelta) -> CompletionDelta:
        """This delta and a later one of the same request, as one."""
        logprobs = None
        if self.logprobs is not None or later.logprobs is not None:
            logprobs = (self.logprobs or []) + (later.logprobs or [])
        return replace(later, text=self.text + later.text, token_ids=self.token_ids + later.token_ids,
                       logprobs=logprobs)


@dataclass
class ProcessedOutputs:
    deltas: list[CompletionDelta]
    abort_ids: list[str]  # ended by a stop string: abort these in the engine core


class _RequestState:
    def __init__(self, detok: IncrementalDetokenizer, params: SamplingParams, num_prompt_tokens: int) -> None:
        self.detok = detok
        self.params = params
        self.num_prompt_tokens = num_prompt_tokens
        self.num_output_tokens = 0


class OutputProcessor:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._states: dict[str, _RequestState] = {}

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        detok = IncrementalDetokenizer(
            self.tokenizer, prompt_token_ids, params.stop, params.include_stop_str_in_output, params.skip_special_tokens
        )
        self._states[request_id] = _RequestState(detok, params, len(prompt_token_ids))

    def abort(self, request_id: str) -> None:
        self._states.pop(request_id, None)

    def process(self, outputs: list[EngineOutput]) -> ProcessedOutputs:
        result = ProcessedOutputs([], [])
        for out in outputs:
            state = self._states.get(out.request_id)
            if state is None:
                continue  # aborted by the frontend after the step started
            delta = self._process_one(state, out)
            if delta.finish_reason == FinishReason.STOP.value and not out.finished:
                result.abort_ids.append(out.request_id)
            if delta.finished:
                del self._states[out.request_id]
            result.deltas.append(delta)
        return result

    def _process_one(self, state: _RequestState, out: EngineOutput) -> CompletionDelta:
        detok = state.detok
        taken = detok.add_tokens(out.new_token_ids)
        token_ids, new_logprobs = out.new_token_ids[:taken], out.new_logprobs[:taken]
        state.num_output_tokens += taken
        finish, stop_reason = out.finish_reason, out.stop_reason
        if detok.stop_reason is not None:
            finish, stop_reason = FinishReason.STOP, detok.stop_reason
        elif finish is not None:
            detok.flush()
        return CompletionDelta(
            request_id=out.request_id,
            text=detok.take_new_text(finished=finish is not None),
            token_ids=list(token_ids),
            logprobs=self._logprobs(new_logprobs) if state.params.logprobs is not None else None,
            finish_reason=finish.value if finish is not None else None,
            stop_reason=stop_reason,
            num_prompt_tokens=state.num_prompt_tokens,
            num_output_tokens=state.num_output_tokens,
            num_cached_tokens=out.num_cached_tokens,
            metrics=out.metrics,
        )

    def _logprobs(self, entries: list[TokenLogprobs]) -> list[PositionLogprobs]:
        positions = []
        for entry in entries:
            position = {tid: Logprob(lp, rank, self._piece(tid)) for rank, (tid, lp) in enumerate(entry.top, start=1)}
            position[entry.token_id] = Logprob(entry.logprob, entry.rank, self._piece(entry.token_id))
            positions.append(position)
        return positions

    def _piece(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)
