"""Verification of speculative tokens in one step, lossless by construction.

A request with k draft ids d_1..d_k gets k + 1 rows of logits: row j is the target
distribution p_j of the token after d_1..d_j (row 0: after its known tokens). Each row is
processed exactly as the plain sampler would process that position (penalties counting
the drafts before it, min_tokens, temperature, top-k/top-p/min-p), then:

- greedy rows accept d_{j+1} when it is p_j's argmax;
- sampled rows accept d_{j+1} with probability min(1, p_j(d) / q_j(d)), q being the
  proposal's distribution; an n-gram proposal is deterministic (q = 1 at d), so the
  rule is p_j(d);
- at the first rejection the token is drawn from the residual max(0, p_j - q_j),
  renormalised (for an n-gram proposal: p_j without d); when all k are accepted, one
  more token is drawn from p_k (the bonus).

The output of each position is then distributed exactly as p_j, which is what makes
speculation invisible in the results. A constrained request's row (it has no drafts: see
engine.speculator) is masked to its grammar's allowed tokens first, as the plain sampler
masks it. Everything stays on the device until the one
copy of the [N, k+1] id matrix to the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kvserve.engine.scheduler_output import TokenLogprobs
from kvserve.structured.masks import TokenMask, apply_token_mask
from kvserve.worker.request_state import RequestState
from kvserve.worker.sampler import LogprobTensors, SamplingBatch, apply_penalties, draw, filter_logits, logprob_tensors
from kvserve.worker.sampling_batch import build_sampling_batch, to_device


@dataclass
class VerifiedTokens:
    """One verification step's results on the device, before the host sees them."""

    ids: torch.Tensor  # [N, K+1] int64: accepted drafts, the sampled token, then -1
    logprobs: LogprobTensors | None  # per expanded row [R]
    row_start: list[int]  # each request's first expanded row
    num_logprobs: list[int | None]  # per request, as asked

    def to_host(self, id_rows: list[list[int]]) -> list[tuple[list[int], list[TokenLogprobs | None]]]:
        """(token ids, their logprobs or Nones) per request, from the [N, K+1] matrix on the host."""
        lp = self.logprobs
        host = None if lp is None else (lp.chosen.tolist(), lp.ranks.tolist(), lp.top_vals.tolist(),
                                        lp.top_ids.tolist())
        result = []
        for req, (row, start) in enumerate(zip(id_rows, self.row_start)):
            tokens = [t for t in row if t >= 0]
            n = self.num_logprobs[req]
            if host is None or n is None:
                result.append((tokens, [None] * len(tokens)))
                continue
            chosen, ranks, vals, ids = host
            result.append((tokens, [TokenLogprobs(t, chosen[start + j], ranks[start + j],
                                                  list(zip(ids[start + j][:n], vals[start + j][:n])))
                                    for j, t in enumerate(tokens)]))
        return result


def expand_states(states: list[RequestState], drafts: list[list[int]]) -> list[RequestState]:
    """One view per verified position: row j of a request sees its drafts before j as
    generated tokens (what penalties and min_tokens count)."""
    rows = []
    for state, draft in zip(states, drafts):
        rows.append(state)
        rows.extend(dataclasses.replace(state, token_ids=state.token_ids + draft[:j], num_pending=0)
                    for j in range(1, len(draft) + 1))
    return rows


def first_rows(drafts: list[list[int]]) -> list[int]:
    """Each request's first expanded row (its next token's), requests having k + 1 rows each."""
    starts = [0]
    for draft in drafts[:-1]:
        starts.append(starts[-1] + len(draft) + 1)
    return starts


class RejectionSampler:
    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator  # the engine-wide one: unseeded rows draw from it

    def verify(
        self,
        logits: torch.Tensor,  # [R, V]: each request's k + 1 rows, in request order
        states: list[RequestState],
        drafts: list[list[int]],  # per request, k ids (possibly none)
        vocab_size: int,
        upload_table: Callable[[list[list[float]]], torch.Tensor] | None = None,
        draft_probs: torch.Tensor | None = None,  # [R, V] q per row; None = deterministic proposals
        token_mask: TokenMask | None = None,  # allowed ids of constrained rows (expanded row numbers)
    ) -> VerifiedTokens:
        device = logits.device
        rows = expand_states(states, drafts)
        batch = build_sampling_batch(rows, vocab_size, device, upload_table)
        logits = logits.float()
        raw = logits.log_softmax(dim=-1) if any(n is not None for n in batch.num_logprobs) else None
        logits = apply_penalties(logits, batch)
        if token_mask is not None:
            logits = apply_token_mask(logits, token_mask)
        layout = _Layout(drafts, device)
        accept, recovered = self._accept_and_recover(logits, batch, layout.row_drafts, draft_probs)
        ids, chosen = layout.assemble(accept, recovered)
        logprobs = logprob_tensors(raw, chosen, batch.num_logprobs) if raw is not None else None
        return VerifiedTokens(ids, logprobs, layout.row_start, [s.params.logprobs for s in states])

    def _accept_and_recover(self, logits, batch: SamplingBatch, draft: torch.Tensor, q: torch.Tensor | None):
        """Per row: whether its draft (-1 at a bonus row) is accepted, and the token drawn
        in case it is not (or the bonus token)."""
        greedy_ids = logits.argmax(dim=-1)
        if batch.all_greedy:
            return greedy_ids == draft, greedy_ids
        temp = batch.temperature.clamp(min=1e-5)[:, None]
        scaled = logits / temp
        if batch.any_filter:
            scaled = filter_logits(scaled, batch.top_k, batch.top_p, batch.min_p)
        p = scaled.softmax(dim=-1)  # [R, V]
        has_draft = draft >= 0
        d = draft.clamp(min=0)[:, None]
        p_d = p.gather(1, d)[:, 0]
        q_d = q.gather(1, d)[:, 0] if q is not None else torch.ones_like(p_d)
        accept = has_draft & (_uniform(p_d, batch.generators, self.generator) * q_d < p_d)
        residual = (p - q).clamp(min=0) if q is not None else p.scatter(1, d, 0.0)
        residual = torch.where(has_draft[:, None], residual, p)
        sampled = draw(residual, batch.generators, self.generator)
        greedy = batch.temperature < 1e-5
        return torch.where(greedy, greedy_ids == draft, accept), torch.where(greedy, greedy_ids, sampled)


def _uniform(like: torch.Tensor, generators: list[torch.Generator | None],
             default: torch.Generator | None) -> torch.Tensor:
    """[R] uniform in [0, 1), seeded rows from their own generator."""
    u = torch.empty_like(like).uniform_(generator=default)
    for row, gen in enumerate(generators):
        if gen is not None:
            u[row].uniform_(generator=gen)
    return u


class _Layout:
    """Where each request's rows are: R expanded rows, N requests, up to K drafts each."""

    def __init__(self, drafts: list[list[int]], device: torch.device) -> None:
        counts = [len(d) for d in drafts]
        self.row_start = first_rows(drafts)
        width = max(counts) + 1
        flat_drafts, req_of_row, pos_of_row, index = [], [], [], []
        for req, (start, draft) in enumerate(zip(self.row_start, drafts)):
            flat_drafts.extend(draft + [-1])
            req_of_row.extend([req] * (len(draft) + 1))
            pos_of_row.extend(range(len(draft) + 1))
            index.append([start + min(j, len(draft)) for j in range(width)])
        # through pinned memory on a GPU: none of these copies waits for the step's work
        host = torch.tensor([flat_drafts, req_of_row, pos_of_row], dtype=torch.int64)
        self.row_drafts, self.req_of_row, self.pos_of_row = to_device(host, device).unbind(0)  # [R] each
        self.index = to_device(torch.tensor(index, dtype=torch.int64), device)  # [N, K+1] row of (request, position)
        self.valid = to_device(torch.tensor([[j < k for j in range(width)] for k in counts]), device)  # [N, K+1]

    def assemble(self, accept: torch.Tensor, recovered: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([N, K+1] ids: accepted drafts, then the token drawn where the first rejection
        (or the bonus position) is, then -1; [R] the id each row emits there)."""
        accepted = (accept[self.index] & self.valid).long()  # [N, K+1]
        num_accepted = accepted.cumprod(dim=1).sum(dim=1)  # [N]
        drafts = self.row_drafts[self.index]
        at_stop = recovered[self.index.gather(1, num_accepted[:, None])]  # [N, 1]
        pos = torch.arange(self.index.shape[1], device=accept.device)[None, :]
        ids = torch.where(pos < num_accepted[:, None], drafts, torch.where(pos == num_accepted[:, None], at_stop, -1))
        chosen = torch.where(self.pos_of_row < num_accepted[self.req_of_row], self.row_drafts, recovered)
        return ids, chosen
