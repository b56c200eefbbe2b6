"""Continuous batching: which requests compute how many tokens in the next step.

Each step serves running requests first (decodes and unfinished prefill chunks), then
admits waiting ones, within `max_num_batched_tokens` and `max_num_seqs`. Prefill and
decode tokens share a step; a prompt longer than the remaining budget is prefilled in
chunks. When the KV pool runs dry, the worst running request (lowest priority, latest
arrival) is preempted: its blocks are freed and it is recomputed later. Under the
priority policy a waiting request also preempts running requests of a lower priority
when there is no room for it (no sequence slot, or not enough blocks for its prompt's
first chunk), and it is admitted before the running requests it outranks get their tokens;
a step that prefills a request computes nothing of a lower priority (its decodes wait a
step too). Low-priority work (batch lines) thus fills the room interactive requests leave,
gives it back first, never takes the budget of the step an interactive request could start
in, and adds nothing to the steps that compute that request's first token. Plain Python.

Scheduling may run one step ahead of the results (the engine schedules and launches
step N+1 before it reads step N's sampled ids): a request's computed count advances
when it is scheduled, a token sampled by a step still in flight is counted in
`num_inflight_tokens` and computed by the next step all the same, and stop conditions
are applied when the ids arrive. A request that stops on a token thus costs one
discarded step; one that will reach max_tokens is not scheduled past it.

With speculative decoding (`speculator`), a decoding request whose ids are all known
computes its next token and up to k draft ids in one step (their KV slots reserved
like any other token's); the runner returns the drafts it accepted and one more token.
The KV of rejected drafts is rolled back by moving `num_computed_tokens` back: their
slots are rewritten by the request's next tokens, in blocks it keeps (at most
ceil(k / block_size) of them beyond its tokens). A step that proposes needs the newest
ids, so the engine applies the step in flight before scheduling one that may propose.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable

from kvserve.config import SchedulerConfig
from kvserve.engine.errors import QueueFullError
from kvserve.engine.kv_cache_manager import KVCacheManager
from kvserve.engine.outputs import EngineOutput
from kvserve.engine.request import EngineRequest, FinishReason, Request, RequestStatus
from kvserve.engine.scheduler_output import (
    CachedRequestData,
    ModelRunnerOutput,
    NewRequestData,
    SchedulerOutput,
)
from kvserve.engine.speculator import Speculator


# policy name -> sort key of a request; smaller runs first and is preempted last
POLICY_KEYS: dict[str, Callable[[Request], tuple]] = {
    "fcfs": lambda r: (r.arrival_time, r.seq),
    "priority": lambda r: (r.priority, r.arrival_time, r.seq),
}


class RequestQueue:
    """Waiting requests ordered by a policy key; removal is lazy (aborted entries are skipped)."""

    def __init__(self, key: Callable[[Request], tuple]) -> None:
        self._key = key
        self._heap: list[tuple[tuple, Request]] = []
        self._members: set[str] = set()

    def __len__(self) -> int:
        return len(self._members)

    def push(self, req: Request) -> None:
        heapq.heappush(self._heap, (self._key(req), req))
        self._members.add(req.request_id)

    def peek(self) -> Request | None:
        while self._heap and self._heap[0][1].request_id not in self._members:
            heapq.heappop(self._heap)
        return self._heap[0][1] if self._heap else None

    def pop(self) -> Request:
        req = self.peek()
        assert req is not None, "pop from an empty queue"
        heapq.heappop(self._heap)
        self._members.discard(req.request_id)
        return req

    def remove(self, req: Request) -> None:
        self._members.discard(req.request_id)


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        kv_cache: KVCacheManager,
        max_model_len: int,
        clock: Callable[[], float] = time.time,
        speculator: Speculator | None = None,
    ) -> None:
        self.config = config
        self.kv_cache = kv_cache
        self.max_model_len = max_model_len
        self.clock = clock
        self.speculator = speculator
        self.key = POLICY_KEYS[config.policy]
        self.requests: dict[str, Request] = {}
        self.waiting = RequestQueue(self.key)
        self.running: list[Request] = []
        self.num_preemptions = 0
        self._seq = itertools.count()
        self._drop_ids: set[str] = set()  # finished/aborted since the last step: runner forgets them
        # finished while a token of theirs was in flight: the id stays taken until it arrives
        self._draining: dict[str, Request] = {}
        self._preempted_ids: set[str] = set()
        self._speculate = False  # this step may propose drafts (see _may_speculate)

    # ---- requests in and out ----

    def add_request(self, engine_req: EngineRequest) -> None:
        if engine_req.request_id in self.requests or engine_req.request_id in self._draining:
            raise ValueError(f"request id {engine_req.request_id!r} is already in use")
        if len(self.waiting) >= self.config.max_waiting:
            raise QueueFullError(f"the waiting queue is full ({self.config.max_waiting} requests)")
        req = Request(engine_req, self.max_model_len)
        req.seq = next(self._seq)
        self.requests[req.request_id] = req
        self.waiting.push(req)

    def abort_requests(self, request_ids: Iterable[str]) -> list[Request]:
        """Finish these requests now and free their blocks; unknown ids are ignored."""
        aborted = []
        for rid in request_ids:
            req = self.requests.get(rid)
            if req is not None:
                self._finish(req, FinishReason.ABORT)
                aborted.append(req)
        return aborted

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    # ---- one step ----

    def schedule(self) -> SchedulerOutput:
        budget = [self.config.max_num_batched_tokens]
        out = SchedulerOutput([], [], {}, 0, self._drop_ids, self._preempted_ids)
        self._drop_ids, self._preempted_ids = set(), set()
        if self.config.policy == "priority":
            self._make_room_for_priority()
        if self.speculator is not None:
            self.speculator.next_step()
        self.running.sort(key=self.key)
        self._speculate = self._may_speculate()
        ahead, behind = self._split_running()
        preempted = self._schedule_running(ahead, budget, out)
        if behind and not preempted:  # the waiting requests that outrank them come first
            self._schedule_waiting(budget, out, below=behind[0].priority)
        cap = self._prefill_priority(out)
        preempted = self._schedule_running(behind, budget, out, prefill_cap=cap) or preempted
        if not preempted:
            self._schedule_waiting(budget, out, below=None if cap is None else cap + 1)
        out.total_num_scheduled_tokens = sum(out.num_scheduled_tokens.values())
        out.preempted_req_ids |= self._preempted_ids
        self._preempted_ids = set()
        return out

    def _split_running(self) -> tuple[list[Request], list[Request]]:
        """The running requests (sorted) that the first waiting one does not outrank, and those
        it does: under the priority policy a waiting request is admitted before lower-priority
        running ones get tokens, so that they never take the budget of its step."""
        req = self.waiting.peek()
        if self.config.policy != "priority" or req is None or req.num_inflight_tokens:
            return self.running, []
        cut = next((i for i, r in enumerate(self.running) if r.priority > req.priority), len(self.running))
        return self.running[:cut], self.running[cut:]

    def _prefill_priority(self, out: SchedulerOutput) -> int | None:
        """Under the priority policy, the best priority among the requests that prefill in this
        step: nothing of a lower priority shares the step, not even a decode row (eight batch
        lines' decodes made an interactive prefill step a fifth longer on the CPU), so that its
        first token comes as fast as it would without them. None when no request prefills
        (or under fcfs)."""
        if self.config.policy != "priority":
            return None
        prefilling = [self.requests[rid].priority for rid, n in out.num_scheduled_tokens.items()
                      if n - len(out.scheduled_spec_decode_tokens.get(rid, ())) > 1]
        return min(prefilling, default=None)

    def _make_room_for_priority(self) -> None:
        """Preempt running requests of a lower priority than the first waiting one, the
        lowest first, until it would fit; requests of its own priority or better stay."""
        req = self.waiting.peek()
        if req is None or req.num_inflight_tokens or not self.running:
            return
        if max(r.priority for r in self.running) <= req.priority:
            return  # the common case under load: nothing running ranks below it
        hits, num_hit = self.kv_cache.get_computed_blocks(req)
        num_new = min(req.num_tokens - num_hit, self.config.max_num_batched_tokens)
        while self.running:
            if len(self.running) < self.config.max_num_seqs and self._fits_beside_running(req, num_new, hits):
                return
            worst = max(self.running, key=self.key)
            if worst.priority <= req.priority:
                return
            self._preempt(worst)

    def _fits_beside_running(self, req: Request, num_new: int, hits: list) -> bool:
        """Room for `req`'s first chunk once every running request has grown by its next tokens."""
        growth = sum(self.kv_cache.blocks_needed(r, r.num_tokens + r.num_inflight_tokens - r.num_computed_tokens)
                     for r in self.running)
        return growth + self.kv_cache.blocks_needed(req, num_new, hits) <= self.kv_cache.num_free_blocks

    def _schedule_running(self, reqs: list[Request], budget: list[int], out: SchedulerOutput,
                          prefill_cap: int | None = None) -> bool:
        """Schedule `reqs` (running, in key order), none of a priority value above `prefill_cap`;
        True if a request was preempted for room."""
        preempted_any = False
        for req in list(reqs):
            if budget[0] <= 0:
                break
            if req.status != RequestStatus.RUNNING:
                continue  # preempted for an earlier one in this loop
            if req.num_output_tokens + req.num_inflight_tokens >= req.max_tokens:
                continue  # its last token is in flight: nothing more to compute
            num_new = min(req.num_tokens + req.num_inflight_tokens - req.num_computed_tokens, budget[0])
            if prefill_cap is not None and req.priority > prefill_cap:
                continue  # it waits for a step without a better one's prefill
            drafts = self._drafts(req, num_new, budget[0])
            new_ids = self.kv_cache.allocate_slots(req, num_new + len(drafts))
            if new_ids is None and drafts:  # room for the next token alone is worth more than a preemption
                drafts = []
                new_ids = self.kv_cache.allocate_slots(req, num_new)
            while new_ids is None:
                victim = self._worst_unscheduled(out)
                self._preempt(victim)
                preempted_any = True
                if victim is req:
                    break
                new_ids = self.kv_cache.allocate_slots(req, num_new)
            if new_ids is None:
                break
            out.scheduled_cached_reqs.append(CachedRequestData(req.request_id, new_ids, req.num_computed_tokens))
            self._scheduled(req, num_new, out, budget, drafts)
        return preempted_any

    def _worst_unscheduled(self, out: SchedulerOutput) -> Request:
        """The preemption victim: the worst running request that has no tokens in this step yet."""
        return max((r for r in self.running if r.request_id not in out.num_scheduled_tokens), key=self.key)

    def _drafts(self, req: Request, num_new: int, budget: int) -> list[int]:
        """Draft ids to verify after `req`'s next token: only for a decoding request whose
        ids are all on the host, and never past max_tokens (which also bounds the context)."""
        if not self._speculate or num_new != 1:
            return []
        limit = min(req.max_tokens - req.num_output_tokens - 1, budget - 1)
        return self.speculator.propose(req, limit)

    def _may_speculate(self) -> bool:
        """Proposals need every id on the host: none while a step's ids are in flight (the
        runner verifies a step's rows together, and none of them may read a pending id)."""
        return (self.speculator is not None and self.speculator.enabled_for(len(self.running))
                and not any(r.num_inflight_tokens for r in self.running))

    def _schedule_waiting(self, budget: list[int], out: SchedulerOutput, below: int | None = None) -> None:
        """Admit waiting requests in key order while they fit (only those whose priority
        value is below `below`, when given, and none below one admitted to prefill)."""
        while budget[0] > 0 and len(self.running) < self.config.max_num_seqs:
            req = self.waiting.peek()
            if req is None or req.num_inflight_tokens:  # preempted with a token still in flight
                return
            if below is not None and req.priority >= below:
                return
            hits, num_hit = self.kv_cache.get_computed_blocks(req)
            num_new = min(req.num_tokens - num_hit, budget[0])
            if self.kv_cache.allocate_slots(req, num_new, hits) is None:
                return
            self.waiting.pop()
            self._admit(req, num_hit)
            out.scheduled_new_reqs.append(self._new_request_data(req))
            self._scheduled(req, num_new, out, budget)
            if num_new > 1 and self.config.policy == "priority":  # no lower prefill beside this one
                below = req.priority + 1 if below is None else min(below, req.priority + 1)

    def _scheduled(self, req: Request, num_new: int, out: SchedulerOutput, budget: list[int],
                   drafts: list[int] = ()) -> None:
        """Count a request's tokens in this step; reaching its end means it samples one
        (after its accepted drafts, if it has any)."""
        out.num_scheduled_tokens[req.request_id] = num_new + len(drafts)
        budget[0] -= num_new + len(drafts)
        req.num_computed_tokens += num_new
        if req.num_computed_tokens == req.num_tokens + req.num_inflight_tokens:
            req.num_inflight_tokens += 1
        if drafts:
            req.spec_token_ids = list(drafts)
            out.scheduled_spec_decode_tokens[req.request_id] = req.spec_token_ids
            req.num_computed_tokens += len(drafts)

    def _admit(self, req: Request, num_hit: int) -> None:
        self.kv_cache.record_lookup(req.num_tokens, num_hit)
        if req.num_preemptions == 0:
            req.num_cached_tokens = num_hit
        req.num_computed_tokens = num_hit
        req.status = RequestStatus.RUNNING
        if req.first_scheduled_time is None:
            req.first_scheduled_time = self.clock()
        self.running.append(req)

    def _new_request_data(self, req: Request) -> NewRequestData:
        return NewRequestData(
            req_id=req.request_id,
            token_ids=list(req.all_token_ids),
            num_prompt_tokens=req.num_prompt_tokens,
            sampling_params=req.sampling_params,
            block_ids=self.kv_cache.block_ids(req.request_id),
            num_computed_tokens=req.num_computed_tokens,
            eos_token_id=req.eos_token_id,
        )

    def _preempt(self, req: Request) -> None:
        """Recompute later: free the blocks, keep the tokens (the prefix cache may revive them)."""
        self.running.remove(req)
        self.kv_cache.free(req)
        req.status = RequestStatus.PREEMPTED
        req.num_computed_tokens = 0
        req.spec_token_ids = []  # nothing to roll back: everything is recomputed
        req.num_preemptions += 1
        self.num_preemptions += 1
        self._preempted_ids.add(req.request_id)
        self.waiting.push(req)

    # ---- results of a step ----

    def update_from_output(self, result: ModelRunnerOutput) -> list[EngineOutput]:
        """Apply one step's sampled ids. Steps are applied in launch order, but the scheduler
        may already have scheduled the next one (see the module note)."""
        outputs = []
        now = self.clock()
        for req_id, token in result.sampled_token_ids.items():
            req = self.requests.get(req_id)
            if req is None:  # finished or aborted since that step was scheduled
                self._drained(req_id)
                continue
            req.num_inflight_tokens -= 1
            accepted = result.accepted_token_ids.get(req_id) if result.accepted_token_ids else None
            if accepted is not None or req.spec_token_ids:
                tokens = self._verified(req, accepted or []) + [token]
            else:
                tokens = [token]  # the common case: one token, nothing to roll back
            out = self._engine_output(req, [], result, now)
            for tok in tokens:  # a stop inside an accepted run drops the rest
                req.append_token(tok)
                out.new_token_ids.append(tok)
                finish, stop_reason = self._check_stop(req, tok)
                if finish is not None:
                    out.finish_reason, out.stop_reason = finish, stop_reason
                    self._finish(req, finish)
                    break
            out.new_logprobs = _logprobs_of(req_id, result)[: len(out.new_token_ids)]
            outputs.append(out)
        return outputs

    def _verified(self, req: Request, accepted: list[int]) -> list[int]:
        """Roll the KV of the rejected drafts back and count the proposal; returns `accepted`."""
        drafts, req.spec_token_ids = req.spec_token_ids, []
        if drafts:
            req.num_computed_tokens -= len(drafts) - len(accepted)
            req.metrics.num_draft_tokens += len(drafts)
            req.metrics.num_accepted_tokens += len(accepted)
            self.speculator.record(req.request_id, len(drafts), len(accepted))
        return accepted

    def _drained(self, req_id: str) -> None:
        req = self._draining.get(req_id)
        if req is not None:
            req.num_inflight_tokens -= 1
            if req.num_inflight_tokens <= 0:
                del self._draining[req_id]

    def _check_stop(self, req: Request, token: int) -> tuple[FinishReason | None, int | None]:
        params = req.sampling_params
        if req.num_output_tokens > params.min_tokens:  # the sampler masked stops before
            if token == req.eos_token_id and not params.ignore_eos:
                return FinishReason.STOP, None
            if token in params.stop_token_ids:
                return FinishReason.STOP, token
        if req.num_output_tokens >= req.max_tokens or req.num_tokens >= self.max_model_len:
            return FinishReason.LENGTH, None
        return None, None

    def _engine_output(self, req: Request, tokens: list[int], result: ModelRunnerOutput, now: float) -> EngineOutput:
        if req.metrics.first_token_time is None:
            req.metrics.first_token_time = now
        req.metrics.last_token_time = now
        req.metrics.first_scheduled_time = req.first_scheduled_time
        req.metrics.num_preemptions = req.num_preemptions
        return EngineOutput(
            request_id=req.request_id,
            new_token_ids=tokens,
            num_prompt_tokens=req.num_prompt_tokens,
            num_cached_tokens=req.num_cached_tokens,
            metrics=req.metrics,
        )

    def _finish(self, req: Request, reason: FinishReason) -> None:
        if req.status == RequestStatus.RUNNING:
            self.running.remove(req)
        else:
            self.waiting.remove(req)
        self.kv_cache.free(req)
        req.status = RequestStatus.FINISHED
        req.finish_reason = reason
        del self.requests[req.request_id]
        self._drop_ids.add(req.request_id)
        if self.speculator is not None:
            self.speculator.forget(req.request_id)
        if req.num_inflight_tokens:
            self._draining[req.request_id] = req


def _logprobs_of(req_id: str, result: ModelRunnerOutput) -> list:
    """The logprobs of a request's accepted drafts and sampled token, in order (or [])."""
    last = result.logprobs.get(req_id)
    if last is None:
        return []
    return result.accepted_logprobs.get(req_id, []) + [last] if result.accepted_logprobs else [last]
