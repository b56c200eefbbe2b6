"""Requests as the engine sees them: the input contract and the scheduler's per-request state."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from kvserve.sampling_params import SamplingParams


@dataclass
class EngineRequest:
    """What the server (or the offline LLM) hands the engine. Serialisable."""

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    priority: int = 0  # lower runs first under the priority policy
    arrival_time: float = field(default_factory=time.time)
    eos_token_id: int | None = None  # the tokenizer's EOS; ends generation unless ignore_eos
    cache_salt: str | None = None  # extra key mixed into prefix-cache hashes (tenant isolation)


@dataclass
class RequestMetrics:
    """Timestamps (time.time() seconds) for latency metrics."""

    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    num_preemptions: int = 0
    num_draft_tokens: int = 0  # speculative tokens proposed for this request
    num_accepted_tokens: int = 0  # of those, accepted


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"


class FinishReason(str, enum.Enum):
    STOP = "stop"  # EOS, a stop token or a stop string
    LENGTH = "length"  # max_tokens or the context length
    ABORT = "abort"  # aborted by the caller (disconnect, timeout, stop string found upstream)


class Request:
    """The scheduler's view of one request; its token ids grow as tokens are sampled.

    `num_computed_tokens` counts tokens whose K/V are in the cache or being written by a
    scheduled step (it advances when a step is scheduled). Prefill and decode are not
    separate phases: each step computes tokens until it catches up with the known tokens,
    and a step that reaches the end samples one new token. Until that token's id reaches
    the host it is counted in `num_inflight_tokens`; the next step can already compute it
    (the runner takes its id from the device), which is what lets scheduling overlap the
    GPU.
    """

    def __init__(self, req: EngineRequest, max_model_len: int) -> None:
        self.request_id = req.request_id
        self.prompt_token_ids = list(req.prompt_token_ids)
        self.sampling_params = req.sampling_params
        self.priority = req.priority
        self.arrival_time = req.arrival_time
        self.eos_token_id = req.eos_token_id
        self.cache_salt = req.cache_salt
        self.all_token_ids: list[int] = list(req.prompt_token_ids)
        self.num_computed_tokens = 0
        self.num_inflight_tokens = 0  # sampled by a launched step, id not known yet
        self.num_cached_tokens = 0  # prompt tokens served from the prefix cache (first admission)
        self.status = RequestStatus.WAITING
        self.finish_reason: FinishReason | None = None
        self.stop_reason: int | str | None = None
        self.num_preemptions = 0
        self.seq = 0  # admission order, set by the scheduler; breaks ties between equal keys
        self.metrics = RequestMetrics(arrival_time=req.arrival_time)
        self.block_hashes: list = []  # the KV cache manager's chained hashes of full blocks
        self.first_scheduled_time: float | None = None
        self.spec_token_ids: list[int] = []  # draft ids being verified by the step in flight
        params = req.sampling_params
        room = max_model_len - len(self.prompt_token_ids)
        self.max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.all_token_ids) - len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.all_token_ids[len(self.prompt_token_ids):]

    @property
    def is_finished(self) -> bool:
        return self.status == RequestStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        self.all_token_ids.append(token_id)

    def __repr__(self) -> str:
        return (
            f"Request({self.request_id!r}, status={self.status.value}, "
            f"tokens={self.num_tokens}, computed={self.num_computed_tokens})"
        )
