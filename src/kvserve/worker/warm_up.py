"""The start-up steps that compile every kernel variant before the first request, and the
packing of fresh prompts for forwards outside the scheduler (the memory profile, KV scale
calibration, `kvserve bench quality`)."""

from __future__ import annotations

import numpy as np
import torch

from kvserve.attention.backend import AttentionMetadata
from kvserve.engine.scheduler_output import CachedRequestData, NewRequestData, SchedulerOutput
from kvserve.sampling_params import SamplingParams

WARM_UP_BLOCKS = 16  # the warm-up's requests use the pool's first blocks


def warm_up_steps(block_size: int) -> list[SchedulerOutput]:
    """A prefill, a mixed step whose decodes read ids still on the device, a decode-only
    step, and the end of the three requests; they write junk into the first blocks of the
    (still unused) pool."""
    greedy = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
    lens = {"warm-up-a": 24, "warm-up-b": 17, "warm-up-c": 40}
    blocks, first = {}, 0
    for rid, n in lens.items():
        blocks[rid] = list(range(first, first + -(-(n + 2) // block_size)))
        first += len(blocks[rid])
    new = {rid: NewRequestData(rid, [0] * n, n, greedy, blocks[rid], 0) for rid, n in lens.items()}
    a, b, c = lens
    return [
        SchedulerOutput([new[a], new[b]], [], {a: lens[a], b: lens[b]}, lens[a] + lens[b]),
        SchedulerOutput([new[c]], [CachedRequestData(r, [], lens[r]) for r in (a, b)],
                        {a: 1, b: 1, c: lens[c]}, 2 + lens[c]),
        SchedulerOutput([], [CachedRequestData(r, [], lens[r] + (r != c)) for r in lens], dict.fromkeys(lens, 1), 3),
        SchedulerOutput([], [], {}, 0, finished_req_ids=set(lens)),
    ]


def packed_prompts(ids: torch.Tensor, lens: list[int], block_size: int,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
    """Inputs of a forward over fresh prompts `ids` [T] (sequences of `lens` tokens, packed),
    each sequence's blocks following the one before's in a cache of their own."""
    blocks = [-(-n // block_size) for n in lens]
    first = np.cumsum([0] + blocks)
    table = torch.zeros(len(lens), max(blocks), dtype=torch.int32)
    for row, (start, count) in enumerate(zip(first, blocks)):
        table[row, :count] = torch.arange(start, start + count)
    positions = torch.cat([torch.arange(n) for n in lens])
    slots = torch.cat([torch.arange(n) + int(start) * block_size for n, start in zip(lens, first)])
    meta = AttentionMetadata(
        slot_mapping=slots.to(device),
        query_start_loc=torch.tensor(np.cumsum([0] + lens), dtype=torch.int32, device=device),
        seq_lens=torch.tensor(lens, dtype=torch.int32, device=device),
        block_tables=table.to(device),
        query_lens_cpu=lens,
        seq_lens_cpu=lens,
        max_query_len=max(lens),
        max_seq_len=max(lens),
    )
    return ids.to(device), positions.to(device), meta
