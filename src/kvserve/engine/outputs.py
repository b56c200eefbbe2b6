"""The engine ⇄ server output contract, streamed per step (DESIGN.md's RequestOutput)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kvserve.engine.request import FinishReason, RequestMetrics
from kvserve.engine.scheduler_output import TokenLogprobs
from kvserve.engine.speculator import SpecStats


@dataclass
class EngineOutput:
    """What one step produced for one request: new token ids, and the end if it ended."""

    request_id: str
    new_token_ids: list[int]
    new_logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    metrics: RequestMetrics | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class EngineStats:
    """A snapshot for metrics, taken after each step."""

    num_running: int
    num_waiting: int
    kv_cache_usage: float  # fraction of blocks in use, 0..1
    num_blocks: int
    prefix_cache_queries: int  # tokens looked up, cumulative
    prefix_cache_hits: int  # tokens found, cumulative
    num_preemptions: int  # cumulative
    step_num_tokens: int = 0  # tokens computed by the last step
    step_num_seqs: int = 0  # requests in the last step (equal to its tokens: a decode-only step)
    num_steps: int = 0  # cumulative
    step_seconds: float = 0.0  # wall time inside steps, cumulative (launch, then wait for the step before)
    spec_decode: SpecStats | None = None  # cumulative acceptance figures, when speculation is on
