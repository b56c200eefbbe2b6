"""Sampling on the device: penalties, temperature, top-k/top-p/min-p, seeded draws, logprobs.

Everything stays on the device until the one copy of sampled ids (and, when asked,
logprobs) back to the host. A seeded row draws its noise from its own generator, so its
output does not depend on what else shares the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvserve.engine.scheduler_output import TokenLogprobs
from kvserve.structured.masks import TokenMask, apply_token_mask


@dataclass
class SamplingBatch:
    """Per-row settings for the rows sampled this step (N rows, vocabulary V); the per-row
    tensors are None in a plain-greedy batch (see plain_greedy)."""

    temperature: torch.Tensor | None  # [N] float32; 0 = greedy
    top_k: torch.Tensor | None  # [N] int64; 0 = off
    top_p: torch.Tensor | None  # [N] float32
    min_p: torch.Tensor | None  # [N] float32
    presence_penalty: torch.Tensor | None  # [N] float32
    frequency_penalty: torch.Tensor | None  # [N] float32
    repetition_penalty: torch.Tensor | None  # [N] float32
    output_counts: torch.Tensor | None  # [N, V] float32 counts of generated tokens, if penalised
    seen_mask: torch.Tensor | None  # [N, V] bool: in prompt or output, if repetition-penalised
    banned: list[tuple[int, list[int]]]  # (row, token ids) masked out (min_tokens not reached)
    generators: list[torch.Generator | None]  # per row; None = the engine-wide generator
    num_logprobs: list[int | None]  # per row
    all_greedy: bool
    any_filter: bool  # some row uses top_k, top_p or min_p
    token_mask: TokenMask | None = None  # allowed next tokens of constrained rows (structured outputs)

    @property
    def is_plain_greedy(self) -> bool:
        """Argmax of the raw logits is the answer (no settings, penalties, logprobs or mask)."""
        return self.temperature is None and self.token_mask is None

    @classmethod
    def plain_greedy(cls, num_rows: int) -> "SamplingBatch":
        """Argmax with nothing else to apply: no per-row tensors are built or copied."""
        return cls(*[None] * 9, banned=[], generators=[None] * num_rows, num_logprobs=[None] * num_rows,
                   all_greedy=True, any_filter=False)


def apply_penalties(logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    if batch.seen_mask is not None:
        rep = batch.repetition_penalty[:, None]
        penalised = torch.where(logits > 0, logits / rep, logits * rep)
        logits = torch.where(batch.seen_mask, penalised, logits)
    if batch.output_counts is not None:
        counts = batch.output_counts
        logits = logits - batch.frequency_penalty[:, None] * counts
        logits = logits - batch.presence_penalty[:, None] * (counts > 0).to(logits.dtype)
    for row, token_ids in batch.banned:
        logits[row, token_ids] = float("-inf")
    return logits


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Set to -inf every token outside each row's top-k, nucleus top-p and min-p sets."""
    vocab = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # [N, V]
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), vocab)
    kth = sorted_logits.gather(1, (k - 1)[:, None])
    remove = sorted_logits < kth
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass strictly ahead of each token
    remove |= before > top_p[:, None]
    remove |= probs < (min_p[:, None] * probs[:, :1])
    remove[:, 0] = False  # the best token always survives
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)


def draw(probs: torch.Tensor, generators: list[torch.Generator | None], default: torch.Generator | None) -> torch.Tensor:
    """Sample one id per row by the exponential race (argmax p / Exp(1))."""
    noise = torch.empty_like(probs).exponential_(generator=default)
    for row, gen in enumerate(generators):
        if gen is not None:
            noise[row].exponential_(generator=gen)
    return (probs / noise).argmax(dim=-1)


@dataclass
class LogprobTensors:
    """Logprob figures of a step's sampled rows, still on the device."""

    chosen: torch.Tensor  # [N] logprob of the sampled token
    ranks: torch.Tensor  # [N] its rank, 1 = most likely
    top_vals: torch.Tensor  # [N, k]
    top_ids: torch.Tensor  # [N, k]


@dataclass
class SampledTokens:
    """One step's sampled ids (and logprob figures) on the device, before the host sees them."""

    ids: torch.Tensor  # [N] int64
    logprobs: LogprobTensors | None
    num_logprobs: list[int | None]  # per row, as asked

    def logprobs_to_host(self, token_ids: list[int]) -> list[TokenLogprobs | None]:
        if self.logprobs is None:
            return [None] * len(token_ids)
        lp = self.logprobs
        chosen, ranks, vals, ids = lp.chosen.tolist(), lp.ranks.tolist(), lp.top_vals.tolist(), lp.top_ids.tolist()
        result: list[TokenLogprobs | None] = []
        for row, n in enumerate(self.num_logprobs):
            if n is None:
                result.append(None)
            else:
                top = list(zip(ids[row][:n], vals[row][:n]))
                result.append(TokenLogprobs(token_ids[row], chosen[row], ranks[row], top))
        return result


class Sampler:
    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def sample(self, logits: torch.Tensor, batch: SamplingBatch) -> SampledTokens:
        """Everything on the device: no host synchronisation."""
        logits = logits.float()  # [N, V]
        raw_logprobs = logits.log_softmax(dim=-1) if any(n is not None for n in batch.num_logprobs) else None
        logits = apply_penalties(logits, batch)
        if batch.token_mask is not None:
            logits = apply_token_mask(logits, batch.token_mask)
        greedy_ids = logits.argmax(dim=-1)
        if batch.all_greedy:
            ids = greedy_ids
        else:
            temp = batch.temperature.clamp(min=1e-5)[:, None]
            scaled = logits / temp
            if batch.any_filter:
                scaled = filter_logits(scaled, batch.top_k, batch.top_p, batch.min_p)
            sampled = draw(scaled.softmax(dim=-1), batch.generators, self.generator)
            ids = torch.where(batch.temperature < 1e-5, greedy_ids, sampled)
        logprobs = logprob_tensors(raw_logprobs, ids, batch.num_logprobs) if raw_logprobs is not None else None
        return SampledTokens(ids, logprobs, batch.num_logprobs)

    def __call__(self, logits: torch.Tensor, batch: SamplingBatch) -> tuple[list[int], list[TokenLogprobs | None]]:
        """Sample and bring the ids (and logprobs) to the host at once."""
        sampled = self.sample(logits, batch)
        token_ids = sampled.ids.tolist()
        return token_ids, sampled.logprobs_to_host(token_ids)


def logprob_tensors(raw: torch.Tensor, ids: torch.Tensor, wanted: list[int | None]) -> LogprobTensors:
    """The sampled token's logprob and rank, and the top-k alternatives, for every row."""
    k = max(n for n in wanted if n is not None)
    chosen = raw.gather(1, ids[:, None])  # [N, 1]
    ranks = (raw > chosen).sum(dim=-1) + 1
    top_vals, top_ids = raw.topk(max(k, 1), dim=-1)
    return LogprobTensors(chosen[:, 0], ranks, top_vals, top_ids)
