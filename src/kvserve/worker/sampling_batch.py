"""Builds the per-row sampling tensors for the requests sampled in one step."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from kvserve.worker.request_state import RequestState
from kvserve.worker.sampler import SamplingBatch


@dataclass
class PendingIds:
    """Ids sampled by the step still in flight, for rows whose last token is one of them:
    `ids[i]` (on the device) is the newest token of row `rows[i]`."""

    rows: torch.Tensor  # [P] int64, on the device
    ids: torch.Tensor  # [P] int64, on the device


def _counts(rows: list[list[int]], vocab_size: int, device: torch.device, pending: PendingIds | None) -> torch.Tensor:
    """[N, V] float32: how often each token id occurs in each row's list (plus its pending id).
    One copy from pinned memory and one scatter: nothing here waits for the GPU."""
    counts = torch.zeros(len(rows), vocab_size, dtype=torch.float32, device=device)
    lengths = [len(token_ids) for token_ids in rows]
    if total := sum(lengths):  # flattened by numpy in C, not row by row in Python
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total)
        index = to_device(torch.from_numpy(np.stack([np.repeat(np.arange(len(rows)), lengths), flat])), device)
        counts.index_put_((index[0], index[1]), torch.ones((), device=device).expand(total), accumulate=True)
    if pending is not None:
        counts.index_put_((pending.rows, pending.ids), torch.ones((), device=device).expand(len(pending.rows)),
                          accumulate=True)
    return counts


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without a blocking copy (through pinned memory on a GPU)."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


# The per-row settings, in the column order of the [N, 7] float32 table sent to the device.
COLUMNS = ("temperature", "top_k", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty")


def _table_on_device(device: torch.device) -> Callable[[list[list[float]]], torch.Tensor]:
    return lambda rows: torch.tensor(rows, dtype=torch.float32, device=device)


def build_sampling_batch(
    states: list[RequestState],
    vocab_size: int,
    device: torch.device,
    upload_table: Callable[[list[list[float]]], torch.Tensor] | None = None,
    pending: PendingIds | None = None,
) -> SamplingBatch:
    """`upload_table` puts the [N, 7] settings table on the device (the runner's goes
    through pinned memory, so that no copy waits for the GPU). `pending`: the rows whose
    newest token is still on the device (see `needs_history`)."""
    params = [s.params for s in states]
    needs_counts = any(_counts_outputs(p) for p in params)
    needs_seen = any(_counts_prompt(p) for p in params)
    output_counts = seen = None
    if needs_counts:
        rows = [s.token_ids[s.num_prompt_tokens:] if _counts_outputs(s.params) else [] for s in states]
        output_counts = _counts(rows, vocab_size, device, pending)
    if needs_seen:  # rows that are not penalised stay empty: one penalised request costs little
        seen = _counts([s.token_ids if _counts_prompt(s.params) else [] for s in states], vocab_size, device,
                       pending) > 0
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
    """Whether sampling these rows reads their generated ids (penalties): the runner then
    passes the ids still on the device as `PendingIds`."""
    return any(_counts_outputs(s.params) or _counts_prompt(s.params) for s in states)


def _counts_outputs(params) -> bool:  # presence / frequency penalties count generated ids
    return bool(params.presence_penalty or params.frequency_penalty)


def _counts_prompt(params) -> bool:  # the repetition penalty marks prompt and generated ids
    return params.repetition_penalty != 1.0
