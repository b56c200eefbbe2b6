"""Builds the per-row sampling tensors for the requests sampled in one step."""

from __future__ import annotations

from collections.abc import Callable

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


# The per-row settings, in the column order of the [N, 7] float32 table sent to the device.
COLUMNS = ("temperature", "top_k", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty")


def _table_on_device(device: torch.device) -> Callable[[list[list[float]]], torch.Tensor]:
    return lambda rows: torch.tensor(rows, dtype=torch.float32, device=device)


def build_sampling_batch(
    states: list[RequestState],
    vocab_size: int,
    device: torch.device,
    upload_table: Callable[[list[list[float]]], torch.Tensor] | None = None,
) -> SamplingBatch:
    """`upload_table` puts the [N, 7] settings table on the device (the runner's goes
    through pinned memory, so that no copy waits for the GPU)."""
    params = [s.params for s in states]
    needs_counts = any(_counts_outputs(p) for p in params)
    needs_seen = any(_counts_prompt(p) for p in params)
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
    table = (upload_table or _table_on_device(device))([[float(getattr(p, c)) for c in COLUMNS] for p in params])
    temperature, top_k, top_p, min_p, presence, frequency, repetition = table.unbind(dim=1)
    return SamplingBatch(
        temperature=temperature,
        top_k=top_k.long(),
        top_p=top_p,
        min_p=min_p,
        presence_penalty=presence,
        frequency_penalty=frequency,
        repetition_penalty=repetition,
        output_counts=output_counts,
        seen_mask=seen,
        banned=banned,
        generators=[s.generator for s in states],
        num_logprobs=num_logprobs,
        all_greedy=all_greedy,
        any_filter=any(p.top_k > 0 or p.top_p < 1.0 or p.min_p > 0.0 for p in params),
    )


def needs_history(states: list[RequestState]) -> bool:
    """Whether sampling these rows reads their generated ids (penalties), which must then
    all be on the host."""
    return any(_counts_outputs(s.params) or _counts_prompt(s.params) for s in states)


def _counts_outputs(params) -> bool:  # presence / frequency penalties count generated ids
    return bool(params.presence_penalty or params.frequency_penalty)


def _counts_prompt(params) -> bool:  # the repetition penalty marks prompt and generated ids
    return params.repetition_penalty != 1.0
