"""The model runner's guides: one per constrained request, and each step's token mask.

A step's masks are built ahead, off the runner's thread: when a step's sampling is queued,
`start_job` hands its constrained rows to a mask job that waits for the sampled ids,
advances every matcher by its row's id (one batched call) and fills the next step's masks
(one batched call); both calls release the GIL and run on llguidance's threads. Meanwhile
the runner applies the step's results, schedules and launches the next forward. The next
`token_mask` takes the job's rows as they are for the rows it followed, and builds the
rest (new requests, a request back from preemption) on the spot, after the ids they need
are on the host. A verification step is masked and followed the same way: a constrained
request takes no drafts (engine.speculator), so its one row there is a plain next token.
On the CPU the job runs at once, on the runner's thread: there the forward's threads use
every core, and a thread beside them only slows them down.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from operator import itemgetter
from pathlib import Path
from typing import Protocol

import llguidance
import llguidance.torch
import numpy as np
import torch

from kvserve.sampling_params import SamplingParams
from kvserve.structured.compiler import GrammarCompiler, load_ll_tokenizer
from kvserve.structured.guide import Guide
from kvserve.structured.mask_buffer import MaskBuffer
from kvserve.structured.masks import TokenMask, allow, words

logger = logging.getLogger(__name__)


class GuidedRow(Protocol):
    """What a guide needs of a request in the runner (worker.request_state.RequestState)."""

    req_id: str
    token_ids: list[int]
    num_prompt_tokens: int
    num_pending: int  # sampled by launched steps, not in token_ids yet
    params: SamplingParams
    eos_token_id: int | None


class GuideTable:
    """Guides by request id, kept across preemption until the request finishes. The
    tokenizer, compiler and llguidance's thread pool are made on the first constrained
    request."""

    def __init__(self, tokenizer_path: str | Path | None, vocab_size: int, device: torch.device,
                 background: bool | None = None) -> None:
        """`background`: build the masks ahead on a thread (default: unless `device` is the CPU)."""
        self.tokenizer_path = tokenizer_path
        self.background = device.type != "cpu" if background is None else background
        self.vocab_size = vocab_size
        self._compiler: GrammarCompiler | None = None
        self._executor: llguidance.LLExecutor | None = None
        self._guides: dict[str, Guide] = {}
        self._buffer = MaskBuffer(words(vocab_size), device)
        self._serial = 0  # token_mask calls so far; a step's host rows alternate with it
        self._job: Future | None = None  # the mask job of the next token_mask, while it runs
        self._job_rows = (0, 0)  # (serial, host rows) the last mask job wrote
        self._thread: ThreadPoolExecutor | None = None
        self._made = 0  # guides made so far: each takes the next compile group in turn

    @property
    def compiler(self) -> GrammarCompiler:
        if self._compiler is None:
            if self.tokenizer_path is None:
                raise ValueError("structured outputs need the model's tokenizer")
            threads = mask_threads() if self.background else 1
            self._compiler = GrammarCompiler(load_ll_tokenizer(self.tokenizer_path, self.vocab_size), groups=threads)
            self._executor = llguidance.LLExecutor(threads)
            if self.background:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="kvserve-masks")
        return self._compiler

    def drop(self, req_id: str) -> None:
        self._guides.pop(req_id, None)  # a running job keeps its own reference

    def close(self) -> None:
        """Wait for the mask job and stop its thread (the table can still build masks inline)."""
        self.wait()
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None

    def wait(self) -> None:
        """Wait for the mask job, if one runs (its guides and host ids are free again)."""
        job, self._job = self._job, None
        if job is not None:
            self._job_rows = job.result()

    def token_mask(self, rows: Sequence[GuidedRow], wait_for_ids: Callable[[], object] = lambda: None,
                   layout: tuple[Sequence[int], int] | None = None) -> TokenMask | None:
        """The allowed tokens of every constrained row whose grammar has started; None if none.
        `wait_for_ids` brings the ids of the step in flight to the rows' token lists; it is
        called only if a row the mask job did not follow has one pending. `layout`: (each
        row's logits row, logits rows in all), where rows are not one logits row each (a
        verification step: a request's next token is its first of several rows)."""
        self.wait()
        self._serial += 1
        masked, behind = [], []  # (row index, host row), (row index, row)
        for i, row in enumerate(rows):
            if row.params.structured is None:
                continue
            guide = self._guides.get(row.req_id)
            if guide is None or guide.ready != self._serial or guide.seen != _num_output(row):
                behind.append((i, row))
            elif guide.row is not None:
                masked.append((i, guide.row))
        if behind:  # rows after the job's (some of which may be of requests not in this step)
            serial, used = self._job_rows
            masked += self._build_now(behind, wait_for_ids, used if serial == self._serial else 0)
        if not masked:
            return None
        if layout is not None:
            logit_rows, num_rows = layout
            return self._to_device([(logit_rows[i], k) for i, k in masked], num_rows)
        return self._to_device(masked, len(rows))

    def start_job(self, rows: Sequence[GuidedRow], ids: Callable[[], list[int]]) -> None:
        """Build the next step's masks of `rows`' constrained requests in the background;
        `ids()` waits for and returns this step's sampled ids (one per row)."""
        if not self._guides:
            return
        followed = [(k, guide) for k, row in enumerate(rows)
                    if row.params.structured is not None and (guide := self._guides.get(row.req_id)) is not None
                    and (row.params.max_tokens is None or _num_output(row) < row.params.max_tokens)]
        if not followed:
            return
        if self._thread is None:  # no device runs meanwhile: build them now, between two steps
            self._job_rows = self._advance(followed, ids, self._serial + 1)
        else:
            self._job = self._thread.submit(self._advance, followed, ids, self._serial + 1)

    def _advance(self, followed: list[tuple[int, Guide]], ids: Callable[[], list[int]], serial: int
                 ) -> tuple[int, int]:
        """The mask job: one id more for every guide, then its mask in row `guide.row`.
        Returns (serial, host rows written)."""
        token_ids = ids()
        taken = [(guide.matcher, token_ids[k]) for k, guide in followed if guide.take(token_ids[k])]
        if taken:
            llguidance.torch.consume_token_par(self._executor, taken)
        return serial, self._fill([guide for _, guide in followed], serial, 0)

    def _build_now(self, behind: list[tuple[int, GuidedRow]], wait_for_ids: Callable[[], object],
                   first: int) -> list[tuple[int, int]]:
        if any(row.num_pending for _, row in behind):
            wait_for_ids()
        guides = [self._caught_up(row) for _, row in behind]
        self._fill(guides, self._serial, first)
        return [(i, guide.row) for (i, _), guide in zip(behind, guides) if guide.row is not None]

    def _fill(self, guides: list[Guide], serial: int, first: int) -> int:
        """Masks of the active `guides` into host rows first, first + 1, ... of step `serial`
        (a finished grammar's row allows only the end tokens); returns the next free row."""
        bits = self._buffer.rows(serial, first + len(guides))
        placed, running, ended = [], [], []  # guides with a row, in row order; (matcher, row) to fill; empty rows
        for guide in guides:  # one pass: this runs for every constrained row of every step
            guide.ready, guide.row = serial, None
            if guide.start is None or guide.matcher.is_error():
                continue
            guide.row = k = first + len(placed)
            placed.append(guide)
            if guide.matcher.is_stopped():
                bits[k] = 0
                ended.append(k)
            else:
                running.append((guide.group, guide.matcher, k))
        if running:  # grouped, so that each of llguidance's threads takes rows of one compile
            running.sort(key=itemgetter(0))
            llguidance.torch.fill_next_token_bitmask_par(self._executor, [(m, k) for _, m, k in running],
                                                         torch.from_numpy(bits))
        self._allow_ends(bits, placed, first, ended)
        return first + len(placed)

    def _allow_ends(self, bits: np.ndarray, placed: list[Guide], first: int, ended: list[int]) -> None:
        """Where a grammar allows EOS, or has finished (rows `ended`, empty), the request's own
        end tokens count as EOS."""
        eos = self.compiler.tokenizer.eos_token
        column = bits[first: first + len(placed), eos >> 5] >> (eos & 31) & 1  # [placed] EOS allowed
        for k in [*(first + np.flatnonzero(column == 1)), *ended]:
            allow(bits, k, placed[k - first].end_tokens)

    def _to_device(self, masked: list[tuple[int, int]], num_rows: int) -> TokenMask:
        device, host_rows = self._buffer.device, [k for _, k in masked]
        bits = self._buffer.upload(self._serial, max(host_rows) + 1)
        if host_rows != list(range(len(host_rows))):
            bits = bits.index_select(0, _to(torch.tensor(host_rows), device))
        if len(masked) == num_rows and all(i == n for n, (i, _) in enumerate(masked)):
            return TokenMask(None, bits)  # every row, in order: no gather of logits rows
        return TokenMask(_to(torch.tensor([i for i, _ in masked]), device), bits)

    def _caught_up(self, row: GuidedRow) -> Guide:
        guide = self._guides.get(row.req_id)
        if guide is None:
            self._made += 1
            group = self._made % self.compiler.groups
            matcher = self.compiler.matcher(row.params.structured.grammar, group)
            guide = Guide(matcher, row.params.structured, _end_tokens(row, self.compiler.tokenizer.eos_token), group)
            self._guides[row.req_id] = guide
        guide.catch_up(row.token_ids, row.num_prompt_tokens)
        return guide


def mask_threads() -> int:
    """llguidance's threads (and compile groups) when masks are built beside a device: its own
    default, 80% of the cores, at most 16 (more only adds contention at realistic batches)."""
    return max(1, min(16, int(0.8 * (os.cpu_count() or 1))))


def _num_output(row: GuidedRow) -> int:
    return len(row.token_ids) + row.num_pending - row.num_prompt_tokens


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on `device`, copied without waiting for the device."""
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor


def _end_tokens(row: GuidedRow, eos: int) -> list[int]:
    ends = [eos, *row.params.stop_token_ids]
    return ends + [row.eos_token_id] if row.eos_token_id is not None else ends
