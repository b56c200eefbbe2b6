"""Which requests propose speculative tokens this step, and how well proposals fare.

The scheduler asks `propose(req, limit)` for each decoding request; the answer is a
list of draft token ids (maybe empty) that the model runner verifies in the same
forward as the request's next token. Proposals cost a wider step and, with async
scheduling, the CPU/GPU overlap of that step, so they back off: a request whose last
`backoff_misses` steps gained nothing (no proposal, or none of it accepted) pauses for
`backoff_steps` steps, twice as long at each pause in a row; an accepted token resets
it. Above `disable_by_batch_size` running requests nothing is proposed (a large batch
is bound by the KV cache, not by the weights that speculation amortises). Plain Python.

Where the drafts come from is the method's proposer (PROPOSERS): `ngram` looks them up
on the host; `draft_model` only reserves their slots (DRAFT_SLOT ids) and the model
runner's draft model chooses them in the step that verifies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collections.abc import Callable
from typing import Protocol

from kvserve.config import SpeculativeConfig
from kvserve.engine.ngram_proposer import NgramIndex
from kvserve.engine.request import Request

MAX_BACKOFF_STEPS = 256
DRAFT_SLOT = 0  # the id a draft_model proposal carries until the runner's draft model fills it in


class Proposer(Protocol):
    """Draft ids for one request's next step; a proposer keeps what it needs per request."""

    def propose(self, req: Request, limit: int) -> list[int]:
        """Up to `limit` draft ids to verify after `req`'s known tokens ([] for none)."""
        ...

    def forget(self, req_id: str) -> None: ...


class NgramProposer:
    """Prompt lookup: each request's n-gram index, brought up to date before a lookup."""

    def __init__(self, config: SpeculativeConfig) -> None:
        self.n_min, self.n_max = config.prompt_lookup_min, config.prompt_lookup_max
        self._indexes: dict[str, NgramIndex] = {}

    def propose(self, req: Request, limit: int) -> list[int]:
        index = self._indexes.get(req.request_id)
        if index is None:
            index = self._indexes[req.request_id] = NgramIndex(self.n_min, self.n_max)
        index.extend(req.all_token_ids[len(index.tokens):])
        return index.propose(limit)

    def forget(self, req_id: str) -> None:
        self._indexes.pop(req_id, None)


class DraftModelProposer:
    """A draft model proposes on the device, in the step that verifies: the scheduler only
    reserves `limit` slots, whose ids the runner fills in (worker/draft_model.py)."""

    def __init__(self, config: SpeculativeConfig) -> None:
        pass

    def propose(self, req: Request, limit: int) -> list[int]:
        return [DRAFT_SLOT] * limit

    def forget(self, req_id: str) -> None:
        pass


# speculative_config method -> its proposer
PROPOSERS: dict[str, Callable[[SpeculativeConfig], Proposer]] = {
    "ngram": NgramProposer,
    "draft_model": DraftModelProposer,
}


@dataclass
class SpecStats:
    """Cumulative acceptance figures (vLLM's spec_decode_* counters)."""

    num_drafts: int = 0  # steps in which a request had proposals verified
    num_draft_tokens: int = 0  # tokens proposed
    num_accepted_tokens: int = 0  # of those, tokens accepted
    accepted_per_pos: list[int] = field(default_factory=list)  # [k]: accepted at draft position i

    def snapshot(self) -> "SpecStats":
        return SpecStats(self.num_drafts, self.num_draft_tokens, self.num_accepted_tokens,
                         list(self.accepted_per_pos))


@dataclass
class _RequestSpec:
    misses: int = 0  # steps in a row that gained nothing
    paused_until: int = 0  # step number before which it proposes nothing
    pauses: int = 0  # pauses in a row (doubles the next one)


class Speculator:
    def __init__(self, config: SpeculativeConfig) -> None:
        self.config = config
        self.proposer = PROPOSERS[config.method](config)
        self.stats = SpecStats(accepted_per_pos=[0] * config.num_speculative_tokens)
        self._reqs: dict[str, _RequestSpec] = {}
        self._step = 0

    def next_step(self) -> None:
        self._step += 1

    def enabled_for(self, num_running: int) -> bool:
        limit = self.config.disable_by_batch_size
        return limit is None or num_running <= limit

    def wants_fresh_ids(self, running: list[Request]) -> bool:
        """Whether some running request may propose next step (its proposal needs the ids
        sampled by the step in flight)."""
        if not self.enabled_for(len(running)):
            return False
        return any(r.num_computed_tokens >= r.num_prompt_tokens and self._may_propose(r) for r in running)

    def _may_propose(self, req: Request) -> bool:
        if req.sampling_params.structured is not None:
            return False  # a grammar's token mask is applied to one sampled token per step, not to drafts
        spec = self._reqs.get(req.request_id)
        return spec is None or spec.paused_until <= self._step

    def propose(self, req: Request, limit: int) -> list[int]:
        """Up to `limit` (capped at num_speculative_tokens) draft ids for `req`'s next step."""
        limit = min(limit, self.config.num_speculative_tokens)
        if limit <= 0 or not self._may_propose(req):
            return []
        spec = self._reqs.setdefault(req.request_id, _RequestSpec())
        drafts = self.proposer.propose(req, limit)
        if not drafts:
            self._missed(spec)
        return drafts

    def record(self, req_id: str, num_drafts: int, num_accepted: int) -> None:
        """Count one verified proposal of `num_drafts` tokens, `num_accepted` of them taken."""
        stats = self.stats
        stats.num_drafts += 1
        stats.num_draft_tokens += num_drafts
        stats.num_accepted_tokens += num_accepted
        for pos in range(num_accepted):
            stats.accepted_per_pos[pos] += 1
        spec = self._reqs.get(req_id)
        if spec is None:
            return
        if num_accepted:
            spec.misses = spec.pauses = 0
        else:
            self._missed(spec)

    def _missed(self, spec: _RequestSpec) -> None:
        spec.misses += 1
        if spec.misses >= self.config.backoff_misses:
            spec.paused_until = self._step + 1 + min(self.config.backoff_steps << spec.pauses, MAX_BACKOFF_STEPS)
            spec.pauses += 1
            spec.misses = 0

    def forget(self, req_id: str) -> None:
        self._reqs.pop(req_id, None)
        self.proposer.forget(req_id)
