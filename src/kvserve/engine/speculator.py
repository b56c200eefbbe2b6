"""Which requests propose speculative tokens this step, and how well proposals fare.

The scheduler asks `propose(req, limit)` for each decoding request; the answer is a
list of draft token ids (maybe empty) that the model runner verifies in the same
forward as the request's next token. Proposals cost a wider step and, with async
scheduling, the CPU/GPU overlap of that step, so they back off: a request whose last
`backoff_misses` steps gained nothing (no proposal, or none of it accepted) pauses for
`backoff_steps` steps, twice as long at each pause in a row; an accepted token resets
it. Above `disable_by_batch_size` running requests nothing is proposed (a large batch
is bound by the KV cache, not by the weights that speculation amortises). Plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvserve.config import SpeculativeConfig
from kvserve.engine.ngram_proposer import NgramIndex
from kvserve.engine.request import Request

MAX_BACKOFF_STEPS = 256


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
    index: NgramIndex
    misses: int = 0  # steps in a row that gained nothing
    paused_until: int = 0  # step number before which it proposes nothing
    pauses: int = 0  # pauses in a row (doubles the next one)


class Speculator:
    def __init__(self, config: SpeculativeConfig) -> None:
        self.config = config
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
        spec = self._state(req)
        drafts = spec.index.propose(limit)
        if not drafts:
            self._missed(spec)
        return drafts

    def _state(self, req: Request) -> _RequestSpec:
        spec = self._reqs.get(req.request_id)
        if spec is None:
            spec = self._reqs[req.request_id] = _RequestSpec(
                NgramIndex(self.config.prompt_lookup_min, self.config.prompt_lookup_max))
        spec.index.extend(req.all_token_ids[len(spec.index.tokens):])
        return spec

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
