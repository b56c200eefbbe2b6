"""The model runner: the one place where scheduled requests become tensors.

It keeps each request's tokens and block table (the scheduler sends only changes),
builds the step's packed inputs, runs the model, and samples the rows whose requests
reached the end of their known tokens (or, for a request verifying draft ids, the
rows of its next token and its drafts: see rejection_sampler). `execute` returns as soon as the step is queued
on the device (a StepHandle); the next step may be prepared and launched before that
step's ids reach the host: an input token that is still on the device is copied there
from the previous step's sampled ids.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from kvserve.attention import AttentionMetadata
from kvserve.attention.kv_format import KVScales, kv_cache_dtype
from kvserve.config import EngineConfig
from kvserve.engine.scheduler_output import SchedulerOutput
from kvserve.parallel.group import SINGLE, RankGroup
from kvserve.structured.guides import GuideTable
from kvserve.structured.masks import TokenMask
from kvserve.worker.cuda_graphs import DecodeGraphs, DecodeOutputs
from kvserve.worker.draft_model import DraftModel
from kvserve.worker.input_buffers import InputBuffers
from kvserve.worker.kv_calibration import calibrate_kv_scales
from kvserve.worker.kv_cache_budget import allocate_kv_caches, num_kv_blocks, tensor_bytes
from kvserve.worker.rejection_sampler import RejectionSampler, first_rows
from kvserve.worker.request_state import RequestState
from kvserve.worker.sampler import SampledTokens, Sampler, SamplingBatch
from kvserve.worker.sampling_batch import PendingIds, build_sampling_batch, needs_history, to_device
from kvserve.worker.step_handle import StepHandle
from kvserve.worker.verify_graphs import VerifyGraphs, expand_to_rows, verify_ladder
from kvserve.worker.warm_up import WARM_UP_BLOCKS, packed_prompts, warm_up_steps


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    meta: AttentionMetadata
    # [N] rows of the hidden states to sample from ([R], k + 1 per request, if verifying);
    # None when they are the step's first N rows, in order (a slice: no gather, no copy)
    logits_indices: torch.Tensor | None
    sample_states: list[RequestState]  # the N requests sampled this step
    drafts: list[list[int]] | None = None  # per sampled request, the draft ids it verifies (a verification step)
    graph_size: int | None = None  # a decode step replayed from the graph of this batch size
    verify_graph_size: int | None = None  # a verification step replayed from the verify graph of these rows
    # sampled rows whose input token is still on the device, and those ids (gathered on the device)
    inflight_rows: list[int] = field(default_factory=list)
    inflight_ids: torch.Tensor | None = None

    @property
    def first_rows_sampled(self) -> bool:
        return self.logits_indices is None


class ModelRunner:
    def __init__(self, config: EngineConfig, model, model_info, device: torch.device, dtype: torch.dtype,
                 tokenizer_path: str | None = None, draft: DraftModel | None = None,
                 group: RankGroup = SINGLE) -> None:
        self.config = config
        self.group = group  # tensor-parallel ranks: every one must size the same KV pool
        self.model = model
        self.draft = draft  # speculative_config method draft_model: proposes the drafts, follows every step
        self.info = model_info
        self.device = device
        self.dtype = dtype
        self.kv_dtype = kv_cache_dtype(config.cache.kv_cache_dtype, dtype)  # the KV pool's storage
        self.kv_scales: list[KVScales] = []  # per layer of an FP8 pool (kv_calibration), set by init_kv_cache
        self.block_size = config.cache.block_size
        self.states: dict[str, RequestState] = {}
        self.generators: dict[str, torch.Generator] = {}  # seeded requests, until they finish
        self.sampler = Sampler(torch.Generator(device=device).manual_seed(config.model.seed))
        self.rejection_sampler = RejectionSampler(self.sampler.generator)
        self.kv_caches: list[torch.Tensor] = []
        self.buffers: InputBuffers | None = None
        self.graphs: DecodeGraphs | None = None
        self.verify_graphs: VerifyGraphs | None = None
        self._launched: list[StepHandle] = []  # steps whose results may not be on the host yet
        self.guides = GuideTable(tokenizer_path, model_info.vocab_size, device)  # constrained requests' grammars

    def init_kv_cache(self, max_model_len: int) -> int:
        """Size the KV pool from the memory budget, allocate it and the input buffers, and
        capture the decode graphs and, with speculation, the verification graphs (CUDA,
        unless enforce_eager). Returns the block count."""
        if self.kv_dtype == torch.float8_e4m3fn:  # first: the pool is not there yet to crowd the calibration run
            self.kv_scales = calibrate_kv_scales(self.model, self.prefill_forward, self.info.vocab_size, max_model_len)
        draft = self.draft
        num_blocks = self.group.min_int(num_kv_blocks(self.config, self.info, self.kv_dtype, self.device,
                                   lambda tokens: self._profile_run(tokens, max_model_len),
                                   tensor_bytes(self.model) + (draft.weight_bytes if draft else 0),
                                   draft.bytes_per_block(self.block_size) if draft else 0))
        self.kv_caches = allocate_kv_caches(num_blocks, self.block_size, self.info, self.kv_dtype, self.device)
        if draft is not None:
            draft.allocate(num_blocks, self.block_size)
        sched = self.config.scheduler
        max_blocks_per_seq = -(-max_model_len // self.block_size)
        max_tokens = sched.max_num_batched_tokens + sched.max_num_seqs
        max_batch = min(sched.max_num_seqs, sched.max_num_batched_tokens)
        graphs = self.device.type == "cuda" and not self.config.device.enforce_eager
        verify_sizes = self._verify_sizes(max_batch, max_tokens) if graphs else []
        self.buffers = InputBuffers(max_tokens, sched.max_num_seqs, max_blocks_per_seq, self.device,
                                    max(verify_sizes, default=0))
        if graphs:
            self.graphs = DecodeGraphs(self.model, self.kv_caches, self.buffers, max_batch, max_model_len)
            self.graphs.capture_all()
        if verify_sizes:  # in the decode graphs' memory pool: one step runs at a time
            q = self.config.speculative.num_speculative_tokens + 1
            self.verify_graphs = VerifyGraphs(self.model, self.kv_caches, self.buffers, verify_sizes, q, max_model_len)
            self.verify_graphs.capture_all(self.graphs.pool)
        if self.device.type == "cuda" and num_blocks >= WARM_UP_BLOCKS and sched.max_num_seqs >= 3:
            self.warm_up()
        return num_blocks

    def release_kv_cache(self) -> None:
        """Free the KV pool and the decode graphs that point into it (for a benchmark's second
        model on the same GPU); the runner cannot step again."""
        self.wait_for_all()
        self.graphs = self.verify_graphs = None
        self.kv_caches = []
        if self.draft is not None:
            self.draft.kv_caches = []
        self._free_device_memory()

    def shutdown(self) -> None:
        """Free everything this runner holds: KV pool, decode graphs, input buffers (pinned
        host memory too), weights, request state. Idempotent; the runner cannot step again."""
        if self.model is None:
            return
        self.wait_for_all()
        self.guides.close()
        self.graphs = self.verify_graphs = None
        self.kv_caches = []
        self.buffers = None
        self.model = None
        self.draft = None
        self.states.clear()
        self.generators.clear()
        self._free_device_memory()

    def _free_device_memory(self) -> None:
        gc.collect()  # graphs and modules can sit in reference cycles
        if self.device.type == "cuda":
            # cuBLAS keeps its workspaces in torch's allocator: without this, memory stays above
            # its level before the engine (they are made again on the next matmul)
            getattr(torch._C, "_cuda_clearCublasWorkspaces", lambda: None)()
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput) -> StepHandle:
        """Queue one step on the device and return its handle without waiting for it."""
        self._settle()
        self._update_states(sched)
        if sched.is_empty:
            return self._launch(StepHandle.empty())
        if self.draft is not None and sched.scheduled_spec_decode_tokens:  # fill in the reserved draft slots
            sched = replace(sched, scheduled_spec_decode_tokens=self.draft.propose(sched, self.states))
        self.buffers.flip()
        inputs = self._prepare_inputs(sched)
        out = self._forward(inputs)
        if self.draft is not None and not sched.scheduled_spec_decode_tokens:  # a proposal wrote its own KV
            self.draft.follow(inputs.input_ids, inputs.positions, inputs.meta)
        states = inputs.sample_states
        if not states:
            return self._launch(StepHandle.empty())
        logits = self._logits(out, inputs)
        if inputs.drafts is not None:
            return self._launch(self._verify(logits, states, inputs.drafts))
        pending = self._pending_ids(inputs) if needs_history(states) else None
        batch = build_sampling_batch(states, self.info.vocab_size, self.device, self._upload_sampling_table, pending)
        batch.token_mask = self._token_mask(states)
        sampled = self._sample(out, logits, batch, inputs)
        host_ids = self.buffers.host["sampled_ids"][: len(states)] if self.device.type == "cuda" else None
        handle = StepHandle(states, sampled, host_ids)
        self.guides.start_job(states, handle.host_token_ids)  # constrained rows' next masks, built meanwhile
        return self._launch(handle)

    def _forward(self, inputs: StepInputs) -> DecodeOutputs:
        if inputs.graph_size:
            return self.graphs.replay(inputs.meta.num_seqs, inputs.graph_size)
        if inputs.verify_graph_size:
            return self.verify_graphs.replay(inputs.meta.num_seqs, inputs.verify_graph_size)
        return DecodeOutputs(self.model(inputs.input_ids, inputs.positions, self.kv_caches, inputs.meta))

    def _logits(self, out: DecodeOutputs, inputs: StepInputs) -> torch.Tensor:
        """[N, V] logits of the sampled rows: of every row, when those are all of them (the
        graph's own, if it computed them), else of the rows gathered."""
        if not inputs.first_rows_sampled:
            return self.model.compute_logits(out.hidden[inputs.logits_indices])
        return out.logits if out.logits is not None else self.model.compute_logits(out.hidden)

    def _sample(self, out: DecodeOutputs, logits: torch.Tensor, batch: SamplingBatch,
                inputs: StepInputs) -> SampledTokens:
        """A plain-greedy step takes the argmax its graph already computed: no kernel here."""
        if out.greedy_ids is not None and inputs.first_rows_sampled and batch.is_plain_greedy:
            return SampledTokens(out.greedy_ids, None, batch.num_logprobs)
        return self.sampler.sample(logits, batch)

    def _verify(self, logits: torch.Tensor, states: list[RequestState], drafts: list[list[int]]) -> StepHandle:
        """Accept or reject each request's drafts (no step is in flight: the scheduler proposes
        only when every id is on the host, so no row reads a pending id). Constrained requests
        take no drafts: each samples its one row under its mask, as in a plain step."""
        mask = self._token_mask(states, (first_rows(drafts), logits.shape[0]))
        verified = self.rejection_sampler.verify(logits, states, drafts, self.info.vocab_size,
                                                 self._upload_sampling_table, token_mask=mask)
        host_ids = None
        if self.device.type == "cuda":
            host_ids = self.buffers.host["verified_ids"][: verified.ids.numel()].view(verified.ids.shape)
        handle = StepHandle(states, verified, host_ids)
        # constrained rows' next masks, built meanwhile: their one token is the first of their ids
        self.guides.start_job(states, lambda: [ids[0] for ids in handle.host_token_ids()])
        return handle

    def _pending_ids(self, inputs: StepInputs) -> PendingIds | None:
        """Penalties count every generated id, including one the step in flight sampled: the
        ids this step's inputs took from the device, so penalised rows keep the overlap too."""
        if not inputs.inflight_rows:
            return None
        return PendingIds(to_device(torch.tensor(inputs.inflight_rows), self.device), inputs.inflight_ids)

    def _token_mask(self, states: list[RequestState], layout: tuple[list[int], int] | None = None
                    ) -> TokenMask | None:
        """Constrained rows' allowed tokens, mostly built by the mask job while the host
        prepared this step and the device ran its forward (see structured.guides). A mask
        the job did not build depends on every earlier token: the step in flight is then
        brought to the host first. `layout`: GuideTable.token_mask's, in a verification step."""
        self.guides.wait()  # the job reads the ids of its step from host buffers reused two steps on
        if not any(s.params.structured is not None for s in states):
            return None
        return self.guides.token_mask(states, lambda: self._launched[-1].result(), layout)

    def _launch(self, handle: StepHandle) -> StepHandle:
        self._launched.append(handle)
        return handle

    def wait_for_all(self) -> None:
        """Bring every launched step's ids to the host (also a follower rank's, before a
        verification step: rank 0 has applied them, and the step's inputs read them from the host)."""
        for handle in self._launched:
            handle.result()
        self._launched = []

    def _settle(self) -> None:
        """Bring every launched step but the last to the host: at most one step's ids are
        in flight when the next is prepared, and host buffers are reused safely."""
        for handle in self._launched[:-1]:
            handle.result()
        self._launched = [h for h in self._launched[-1:] if not h.done]

    def _upload_sampling_table(self, rows: list[list[float]]) -> torch.Tensor:
        self.buffers.np["sampling"][: len(rows)] = rows
        return self.buffers.upload("sampling", len(rows))

    def _update_states(self, sched: SchedulerOutput) -> None:
        for req_id in sched.finished_req_ids:
            self.states.pop(req_id, None)
            self.generators.pop(req_id, None)
            self.guides.drop(req_id)
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
        """Pack the step's tokens into the input buffers (host side first, then one copy each)."""
        bs, np_ = self.block_size, self.buffers.np
        ids, positions, slots, query_lens, seq_lens, logits_idx, sampled = [], [], [], [], [], [], []
        inflight_dst, inflight_src, inflight_rows = [], [], []
        table, width = np_["block_tables"], 0
        spec = sched.scheduled_spec_decode_tokens
        drafts_of = [] if spec else None  # per sampled request, in a verification step
        for row, (req_id, num) in enumerate(sched.num_scheduled_tokens.items()):
            state = self.states[req_id]
            start = state.num_computed_tokens
            end = start + num
            blocks = state.block_ids
            drafts = spec.get(req_id) if spec else None
            if num == 1:  # decode: the common case, kept to plain int arithmetic
                if start < len(state.token_ids):
                    ids.append(state.token_ids[start])
                else:  # sampled by the previous step, still on the device; this row samples next
                    inflight_dst.append(len(ids))
                    inflight_src.append(self._launched[-1].row_of[req_id])
                    inflight_rows.append(len(sampled))
                    ids.append(0)
                positions.append(start)
                slots.append(blocks[start // bs] * bs + start % bs)
            else:
                ids.extend(state.token_ids[start:end] if drafts is None else state.token_ids[start:] + drafts)
                positions.extend(range(start, end))
                slots.extend(blocks[p // bs] * bs + p % bs for p in range(start, end))
            table[row, : len(blocks)] = blocks
            width = max(width, len(blocks))
            query_lens.append(num)
            seq_lens.append(end)
            state.num_computed_tokens = end
            if drafts is not None:  # the rows of its next token and of each draft
                logits_idx.extend(range(len(ids) - len(drafts) - 1, len(ids)))
            elif end == len(state.token_ids) + state.num_pending:
                logits_idx.append(len(ids) - 1)
            else:
                continue
            sampled.append(state)
            if drafts_of is not None:
                drafts_of.append(drafts or [])
        logits_idx = None if len(logits_idx) == len(ids) else logits_idx
        inputs = self._upload(ids, positions, slots, query_lens, seq_lens, logits_idx, sampled, width,
                              verify=bool(spec))
        inputs.drafts = drafts_of
        if inflight_dst:
            inputs.inflight_rows = inflight_rows
            inputs.inflight_ids = self._copy_inflight_ids(inputs.input_ids, inflight_dst, inflight_src)
        return inputs

    def _copy_inflight_ids(self, input_ids: torch.Tensor, dst: list[int], src: list[int]) -> torch.Tensor:
        """input_ids[dst] = the previous step's sampled ids[src], on the device; returns those ids."""
        buf, n = self.buffers, len(dst)
        if dst[-1] == n - 1 and src == dst:  # rows 0..n-1 in both (a steady decode batch): one copy
            return input_ids[:n].copy_(self._launched[-1].device_ids[:n])
        buf.np["inflight_dst"][:n] = dst
        buf.np["inflight_src"][:n] = src
        ids = self._launched[-1].device_ids.index_select(0, buf.upload("inflight_src", n))
        input_ids.index_copy_(0, buf.upload("inflight_dst", n), ids)
        return ids

    def _upload(self, ids, positions, slots, query_lens, seq_lens, logits_idx, sampled, width,
                verify: bool = False) -> StepInputs:
        buf, np_ = self.buffers, self.buffers.np
        num_tokens, num_seqs = len(ids), len(seq_lens)
        np_["input_ids"][:num_tokens] = ids
        np_["positions"][:num_tokens] = positions
        np_["slot_mapping"][:num_tokens] = slots
        np_["seq_lens"][:num_seqs] = seq_lens
        rows = num_seqs
        padded = self._graph_size(num_tokens, num_seqs)
        if padded:  # a decode step replayed from a graph: pad rows [num_seqs, padded)
            np_["slot_mapping"][num_seqs:padded] = -1
            np_["seq_lens"][num_seqs:padded] = 0
            rows = num_tokens = padded
        verify_size = self._verify_graph_size(query_lens) if verify and not padded else None
        if verify_size:
            return self._upload_rows(query_lens, num_tokens, width, logits_idx, sampled, verify_size)
        meta = AttentionMetadata(
            slot_mapping=buf.upload("slot_mapping", num_tokens),
            query_start_loc=self._query_starts(query_lens, rows, padded),
            seq_lens=buf.upload("seq_lens", rows),
            block_tables=buf.upload("block_tables", rows, width),
            query_lens_cpu=query_lens,
            seq_lens_cpu=seq_lens,
            max_query_len=max(query_lens),
            max_seq_len=max(seq_lens),
        )
        return StepInputs(
            input_ids=buf.upload("input_ids", num_tokens),
            positions=buf.upload("positions", num_tokens),
            meta=meta,
            logits_indices=self._upload_logits_indices(logits_idx),
            sample_states=sampled,
            graph_size=padded,
            verify_graph_size=verify_size,
        )

    def _query_starts(self, query_lens: list[int], rows: int, graph_size: int | None) -> torch.Tensor:
        """[rows + 1] int32 offsets of the rows' queries; a graph's decode rows have its constant ones."""
        if graph_size:
            return self.graphs.row_starts[: rows + 1]
        np_ = self.buffers.np
        np_["query_start_loc"][0] = 0
        np.cumsum(query_lens, out=np_["query_start_loc"][1 : len(query_lens) + 1])
        return self.buffers.upload("query_start_loc", rows + 1)

    def _upload_logits_indices(self, logits_idx: list[int] | None) -> torch.Tensor | None:
        if logits_idx is None:
            return None
        self.buffers.np["logits_indices"][: len(logits_idx)] = logits_idx
        return self.buffers.upload("logits_indices", len(logits_idx))

    def _graph_size(self, num_tokens: int, num_seqs: int) -> int | None:
        if self.graphs is None or num_tokens != num_seqs:
            return None
        return self.graphs.padded_size(num_seqs)

    def _upload_rows(self, query_lens, num_tokens, width, logits_idx, sampled, size) -> StepInputs:
        """A verification step as `num_tokens` decode rows padded to a graph's `size` rows
        (worker/verify_graphs); the host buffers hold its packed inputs."""
        buf = self.buffers
        lens = expand_to_rows(buf.np, query_lens, num_tokens, width, size)
        buf.upload("verify_seq_lens", size)
        buf.upload("verify_tables", size)
        meta = self.verify_graphs.metadata(num_tokens, buf.upload("slot_mapping", size)[:num_tokens],
                                           lens.tolist(), int(lens.max()))
        return StepInputs(
            input_ids=buf.upload("input_ids", size)[:num_tokens],
            positions=buf.upload("positions", size)[:num_tokens],
            meta=meta,
            logits_indices=self._upload_logits_indices(logits_idx),
            sample_states=sampled,
            verify_graph_size=size,
        )

    def _verify_graph_size(self, query_lens: list[int]) -> int | None:
        return None if self.verify_graphs is None else self.verify_graphs.graph_rows(query_lens)

    def _verify_sizes(self, max_batch: int, max_tokens: int) -> list[int]:
        """Row counts of the verification graphs (none without speculation)."""
        spec = self.config.speculative
        if spec is None:
            return []
        return verify_ladder(max_batch, spec.num_speculative_tokens + 1, max_tokens, spec.disable_by_batch_size)

    @torch.inference_mode()
    def _profile_run(self, num_tokens: int, max_model_len: int) -> None:
        """One forward over `num_tokens` dummy prompt tokens, to measure the activation peak.

        The tokens are packed as the scheduler would pack them, in sequences of at most
        max_model_len: no position passes the model's rotary table (a longer dummy
        sequence once read past it, which corrupted memory that a later engine hit)."""
        lens = [max_model_len] * (num_tokens // max_model_len) + [num_tokens % max_model_len] * bool(
            num_tokens % max_model_len)
        hidden = self.prefill_forward(torch.zeros(num_tokens, dtype=torch.int64), lens)
        self.model.compute_logits(hidden[-self.config.scheduler.max_num_seqs:])

    @torch.inference_mode()
    def prefill_forward(self, ids: torch.Tensor, lens: list[int]) -> torch.Tensor:
        """Hidden states [T, hidden] of fresh prompts `ids` [T] (sequences of `lens` tokens,
        packed) on a KV cache of their own, outside the pool and the scheduler."""
        caches = allocate_kv_caches(sum(-(-n // self.block_size) for n in lens), self.block_size, self.info,
                                    self.kv_dtype, self.device)
        ids, positions, meta = packed_prompts(ids, lens, self.block_size, self.device)
        return self.model(ids, positions, caches, meta)

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Run real steps through execute() (warm_up.py says which), with the real buffers, so
        that every kernel variant is JIT-compiled at start-up and not in the first requests'
        latency."""
        for sched in warm_up_steps(self.block_size):
            self.execute(sched)
        self.wait_for_all()
