"""The scheduler ⇄ model runner contract.

Like vLLM v1, a step sends only what changed: a request's prompt and sampling settings
travel once (NewRequestData); after that only its new block ids and how many tokens to
compute (CachedRequestData). The runner keeps each request's token ids and block table,
appends what it samples, and forgets a request when it appears in `finished_req_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvserve.sampling_params import SamplingParams


@dataclass
class NewRequestData:
    req_id: str
    token_ids: list[int]  # every known token: prompt, plus outputs when resumed after preemption
    num_prompt_tokens: int
    sampling_params: SamplingParams
    block_ids: list[int]
    num_computed_tokens: int
    eos_token_id: int | None = None


@dataclass
class CachedRequestData:
    req_id: str
    new_block_ids: list[int]  # appended to the runner's block table
    num_computed_tokens: int


@dataclass
class SchedulerOutput:
    scheduled_new_reqs: list[NewRequestData]
    scheduled_cached_reqs: list[CachedRequestData]
    num_scheduled_tokens: dict[str, int]  # req_id -> tokens computed this step
    total_num_scheduled_tokens: int
    finished_req_ids: set[str] = field(default_factory=set)  # runner drops all their state
    # preempted since the last step: runner drops their tokens and blocks but keeps their
    # sampling generator, so that a seeded request resumes exactly where it was
    preempted_req_ids: set[str] = field(default_factory=set)
    # req_id -> draft ids computed after its known tokens and verified this step; counted in
    # num_scheduled_tokens (1 + len(drafts) for a decoding request). With a draft model these
    # are reserved slots (speculator.DRAFT_SLOT) whose ids the runner's draft model chooses
    scheduled_spec_decode_tokens: dict[str, list[int]] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return self.total_num_scheduled_tokens == 0


@dataclass
class TokenLogprobs:
    """Log-probabilities for one sampled position (raw model distribution)."""

    token_id: int
    logprob: float
    rank: int  # 1 = most likely
    top: list[tuple[int, float]]  # the top-k alternatives, best first


@dataclass
class ModelRunnerOutput:
    """Sampled token per request that reached the end of its known tokens this step."""

    sampled_token_ids: dict[str, int]
    logprobs: dict[str, TokenLogprobs] = field(default_factory=dict)
    # requests that had drafts verified: the accepted drafts, which come before the sampled
    # token (the bonus or correction token), and their logprobs when asked for
    accepted_token_ids: dict[str, list[int]] = field(default_factory=dict)
    accepted_logprobs: dict[str, list[TokenLogprobs]] = field(default_factory=dict)
