"""Builds the per-row sampling tensors for the requests sampled in one step."""

from __future__ import annotations

import torch

from kvserve.worker.request_state import RequestState
from kvserve.worker.sampler import SamplingBatch


def _counts(rows: list[list[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """[N, V] float32: how often each token id occurs in each row's list."""
    counts = torch.zeros(len(rows), vocab_size, dtype=torch.float32, device=device)
    for i, token_ids in enumerate(rows):
        if token_ids:
            idx = torch.tensor(token_ids, dtype=torch.int64, device=device)
            counts[i].index_add_(0, idx, torch.ones(len(token_ids), device=device))
    return counts


def build_sampling_batch(states: list[RequestState], vocab_size: int, device: torch.device) -> SamplingBatch:
    params = [s.params for s in states]

    def column(name: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([getattr(p, name) for p in params], dtype=dtype, device=device)

    needs_counts = any(p.presence_penalty or p.frequency_penalty for p in params)
    needs_seen = any(p.repetition_penalty != 1.0 for p in params)
    output_counts = seen = None
    if needs_counts:
        output_counts = _counts([s.token_ids[s.num_prompt_tokens:] for s in states], vocab_size, device)
    if needs_seen:
        seen = _counts([s.token_ids for s in states], vocab_size, device) > 0
    banned = [(row, ids) for row, s in enumerate(states) if (ids := s.banned_token_ids())]
    all_greedy = all(p.greedy for p in params)
    num_logprobs = [p.logprobs for p in params]
    if all_greedy and not (needs_counts or needs_seen or banned) and all(n is None for n in num_logprobs):
        return SamplingBatch.plain_greedy(len(states))  # the common benchmark case: argmax only
    return SamplingBatch(
        temperature=column("temperature", torch.float32),
        top_k=column("top_k", torch.int64),
        top_p=column("top_p", torch.float32),
        min_p=column("min_p", torch.float32),
        presence_penalty=column("presence_penalty", torch.float32),
        frequency_penalty=column("frequency_penalty", torch.float32),
        repetition_penalty=column("repetition_penalty", torch.float32),
        output_counts=output_counts,
        seen_mask=seen,
        banned=banned,
        generators=[s.generator for s in states],
        num_logprobs=num_logprobs,
        all_greedy=all_greedy,
        any_filter=any(p.top_k > 0 or p.top_p < 1.0 or p.min_p > 0.0 for p in params),
    )
