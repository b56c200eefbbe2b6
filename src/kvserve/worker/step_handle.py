"""A launched step: its sampled ids are on the way to the host while the CPU moves on.

The runner returns a StepHandle as soon as a step's work is queued on the GPU. The
sampled ids are copied into pinned memory behind that work and an event is recorded;
`result()` waits for the event (the step's one synchronisation), appends the ids to the
requests' token lists and returns them. Until then the next step can already read the
ids on the device (`device_ids` and `row_of`).
"""

from __future__ import annotations

import torch

from kvserve.engine.scheduler_output import ModelRunnerOutput
from kvserve.worker.rejection_sampler import VerifiedTokens
from kvserve.worker.request_state import RequestState
from kvserve.worker.sampler import SampledTokens


class StepHandle:
    def __init__(self, states: list[RequestState], sampled: SampledTokens | VerifiedTokens | None = None,
                 host_ids: torch.Tensor | None = None) -> None:
        self.states = states
        self.sampled = sampled
        self.row_of = {s.req_id: row for row, s in enumerate(states)}
        self._host_ids = host_ids
        self._event: torch.cuda.Event | None = None
        self._result: ModelRunnerOutput | None = ModelRunnerOutput({}) if not states else None
        if sampled is not None and host_ids is not None:
            host_ids.copy_(sampled.ids, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        for state in states:
            state.num_pending += 1

    @classmethod
    def empty(cls) -> "StepHandle":
        return cls([])

    @property
    def device_ids(self) -> torch.Tensor:
        return self.sampled.ids

    @property
    def done(self) -> bool:
        return self._result is not None

    def result(self) -> ModelRunnerOutput:
        """Wait for the sampled ids; the first call also appends them to the requests."""
        if self._result is None:
            self._result = self._apply(self._per_request(self.host_token_ids()))
        return self._result

    def host_token_ids(self) -> list:
        """Wait for the sampled ids and return them, changing no request: safe on another
        thread (the structured-output mask job) until the runner reuses the host buffer."""
        if self._event is not None:
            self._event.synchronize()
            return self._host_ids.tolist()
        return self.sampled.ids.tolist()

    def _per_request(self, token_ids: list) -> list[tuple[list[int], list]]:
        """(ids, logprobs) per request: one each, or accepted drafts and one from a verification."""
        if isinstance(self.sampled, VerifiedTokens):
            return self.sampled.to_host(token_ids)
        return [([t], [lp]) for t, lp in zip(token_ids, self.sampled.logprobs_to_host(token_ids))]

    def _apply(self, per_request: list[tuple[list[int], list]]) -> ModelRunnerOutput:
        out = ModelRunnerOutput({})
        for state, (tokens, lps) in zip(self.states, per_request):
            state.token_ids.extend(tokens)
            state.num_pending -= 1
            out.sampled_token_ids[state.req_id] = tokens[-1]
            if len(tokens) > 1:
                out.accepted_token_ids[state.req_id] = tokens[:-1]
            if lps[-1] is not None:
                out.logprobs[state.req_id] = lps[-1]
                if len(tokens) > 1:
                    out.accepted_logprobs[state.req_id] = lps[:-1]
        return out
