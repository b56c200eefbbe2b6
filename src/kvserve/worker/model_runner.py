"""The model runner: the one place where scheduled requests become tensors.

It keeps each request's tokens and block table (the scheduler sends only changes),
builds the step's packed inputs, runs the model, and samples the rows whose requests
reached the end of their known tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvserve.attention import AttentionMetadata, get_backend
from kvserve.config import EngineConfig
from kvserve.engine.scheduler_output import ModelRunnerOutput, SchedulerOutput
from kvserve.worker.kv_cache_budget import allocate_kv_caches, num_kv_blocks
from kvserve.worker.request_state import RequestState
from kvserve.worker.sampler import Sampler
from kvserve.worker.sampling_batch import build_sampling_batch


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    meta: AttentionMetadata
    logits_indices: torch.Tensor  # [N] rows of the hidden states to sample from
    sample_states: list[RequestState]  # the N requests sampled this step


class ModelRunner:
    def __init__(self, config: EngineConfig, model, model_info, device: torch.device, dtype: torch.dtype) -> None:
        self.config = config
        self.model = model
        self.info = model_info
        self.device = device
        self.dtype = dtype
        self.block_size = config.cache.block_size
        self.states: dict[str, RequestState] = {}
        self.generators: dict[str, torch.Generator] = {}  # seeded requests, until they finish
        self.sampler = Sampler(torch.Generator(device=device).manual_seed(config.model.seed))
        self.kv_caches: list[torch.Tensor] = []

    def init_kv_cache(self) -> int:
        """Size the KV pool from the memory budget, allocate it, and return its block count."""
        num_blocks = num_kv_blocks(self.config, self.info, self.dtype, self.device, self._profile_run)
        self.kv_caches = allocate_kv_caches(num_blocks, self.block_size, self.info, self.dtype, self.device)
        return num_blocks

    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        self._update_states(sched)
        if sched.is_empty:
            return ModelRunnerOutput({})
        inputs = self._prepare_inputs(sched)
        hidden = self.model(inputs.input_ids, inputs.positions, self.kv_caches, inputs.meta)
        if not inputs.sample_states:
            return ModelRunnerOutput({})
        logits = self.model.compute_logits(hidden[inputs.logits_indices])
        batch = build_sampling_batch(inputs.sample_states, self.info.vocab_size, self.device)
        token_ids, logprobs = self.sampler(logits, batch)
        result = ModelRunnerOutput({})
        for state, token, lp in zip(inputs.sample_states, token_ids, logprobs):
            state.token_ids.append(token)
            result.sampled_token_ids[state.req_id] = token
            if lp is not None:
                result.logprobs[state.req_id] = lp
        return result

    def _update_states(self, sched: SchedulerOutput) -> None:
        for req_id in sched.finished_req_ids:
            self.states.pop(req_id, None)
            self.generators.pop(req_id, None)
        for req_id in sched.preempted_req_ids:
            self.states.pop(req_id, None)
        for new in sched.scheduled_new_reqs:
            seed = new.sampling_params.seed
            if seed is not None and new.req_id not in self.generators:
                self.generators[new.req_id] = torch.Generator(device=self.device).manual_seed(seed)
            self.states[new.req_id] = RequestState(
                new.req_id, list(new.token_ids), new.num_prompt_tokens, new.sampling_params,
                list(new.block_ids), new.num_computed_tokens, new.eos_token_id, self.generators.get(new.req_id),
            )
        for cached in sched.scheduled_cached_reqs:
            state = self.states[cached.req_id]
            state.block_ids.extend(cached.new_block_ids)
            state.num_computed_tokens = cached.num_computed_tokens

    def _prepare_inputs(self, sched: SchedulerOutput) -> StepInputs:
        bs = self.block_size
        ids, positions, slots, query_lens, seq_lens, tables, logits_idx, sampled = [], [], [], [], [], [], [], []
        for req_id, num in sched.num_scheduled_tokens.items():
            state = self.states[req_id]
            start, end = state.num_computed_tokens, state.num_computed_tokens + num
            ids.extend(state.token_ids[start:end])
            positions.extend(range(start, end))
            slots.extend(state.block_ids[p // bs] * bs + p % bs for p in range(start, end))
            query_lens.append(num)
            seq_lens.append(end)
            tables.append(state.block_ids)
            state.num_computed_tokens = end
            if end == len(state.token_ids):
                logits_idx.append(len(ids) - 1)
                sampled.append(state)
        max_blocks = max(len(t) for t in tables)
        dev = self.device
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=dev),
            query_start_loc=torch.tensor([0] + _cumsum(query_lens), dtype=torch.int32, device=dev),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=dev),
            block_tables=torch.tensor([t + [0] * (max_blocks - len(t)) for t in tables], dtype=torch.int32, device=dev),
            query_lens_cpu=query_lens,
            seq_lens_cpu=seq_lens,
            max_query_len=max(query_lens),
            max_seq_len=max(seq_lens),
        )
        return StepInputs(
            input_ids=torch.tensor(ids, dtype=torch.int64, device=dev),
            positions=torch.tensor(positions, dtype=torch.int64, device=dev),
            meta=meta,
            logits_indices=torch.tensor(logits_idx, dtype=torch.int64, device=dev),
            sample_states=sampled,
        )

    @torch.inference_mode()
    def _profile_run(self, num_tokens: int) -> None:
        """One forward over `num_tokens` dummy prompt tokens, to measure the activation peak."""
        bs = self.block_size
        num_blocks = -(-num_tokens // bs)
        caches = allocate_kv_caches(num_blocks, bs, self.info, self.dtype, self.device)
        meta = AttentionMetadata(
            slot_mapping=torch.arange(num_tokens, device=self.device),
            query_start_loc=torch.tensor([0, num_tokens], dtype=torch.int32, device=self.device),
            seq_lens=torch.tensor([num_tokens], dtype=torch.int32, device=self.device),
            block_tables=torch.arange(num_blocks, dtype=torch.int32, device=self.device)[None],
            query_lens_cpu=[num_tokens],
            seq_lens_cpu=[num_tokens],
            max_query_len=num_tokens,
            max_seq_len=num_tokens,
        )
        ids = torch.zeros(num_tokens, dtype=torch.int64, device=self.device)
        hidden = self.model(ids, torch.arange(num_tokens, device=self.device), caches, meta)
        self.model.compute_logits(hidden[-self.config.scheduler.max_num_seqs:])
        del caches


def _cumsum(values: list[int]) -> list[int]:
    total, out = 0, []
    for v in values:
        total += v
        out.append(total)
    return out


def build_attention_backend(config: EngineConfig, device: str):
    return get_backend(config.device.attention_backend, device)
