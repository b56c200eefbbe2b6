"""The model runner's persistent view of a request, updated from each SchedulerOutput."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvserve.sampling_params import SamplingParams


@dataclass
class RequestState:
    req_id: str
    token_ids: list[int]  # prompt + generated, appended by the runner as it samples
    num_prompt_tokens: int
    params: SamplingParams
    block_ids: list[int]
    num_computed_tokens: int
    eos_token_id: int | None
    generator: torch.Generator | None  # seeded requests only; survives preemption
    num_pending: int = 0  # sampled by launched steps, not yet appended to token_ids

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) + self.num_pending - self.num_prompt_tokens

    def banned_token_ids(self) -> list[int]:
        """Tokens that may not be sampled yet because min_tokens is not reached."""
        if self.num_output_tokens >= self.params.min_tokens:
            return []
        banned = list(self.params.stop_token_ids)
        if self.eos_token_id is not None and not self.params.ignore_eos:
            banned.append(self.eos_token_id)
        return banned
