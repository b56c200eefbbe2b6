"""EngineCore: the loop `schedule → run model → sample → update`, one step at a time.

It works on token ids only; tokenizing, detokenizing and stop strings happen in the
frontend (LLMEngine for the offline API, AsyncLLM for the server).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch

from kvserve.attention import get_backend
from kvserve.attention.kv_format import fp8_unsupported_reason
from kvserve.config import ConfigError, EngineConfig
from kvserve.engine.kv_cache_manager import KVCacheManager
from kvserve.engine.outputs import EngineOutput, EngineStats
from kvserve.engine.request import EngineRequest
from kvserve.engine.scheduler import Scheduler
from kvserve.engine.speculator import Speculator
from kvserve.models import ARCHITECTURES
from kvserve.models.dummy import load_dummy_model
from kvserve.models.loader import architecture_of, load_hf_config, load_model, model_info, resolve_dtype
from kvserve.models.loader import int4_checkpoint
from kvserve.models.quantization import DEVICES as QUANTIZATION_DEVICES
from kvserve.models.quantization import quantize
from kvserve.parallel.followers import NO_FOLLOWERS, rank_config, start_ranks
from kvserve.parallel.group import RankGroup
from kvserve.parallel.shard import local_info, shard_model
from kvserve.worker.draft_model import load_draft_model
from kvserve.worker.kv_cache_budget import check_fits, check_gpu_memory, tensor_bytes
from kvserve.worker.model_runner import ModelRunner
from kvserve.worker.step_handle import StepHandle

logger = logging.getLogger(__name__)

# load_format -> loader(model_dir, attention backend, dtype, device)
MODEL_LOADERS = {"auto": load_model, "dummy": load_dummy_model}


def resolve_model_dir(config: EngineConfig) -> Path:
    if config.model.model:
        return Path(config.model.model)
    from kvserve.default_model import default_model_dir

    return default_model_dir()


class EngineCore:
    def __init__(self, config: EngineConfig, group: RankGroup | None = None) -> None:
        """`group`: this process is a follower rank of a tensor-parallel engine (rank_worker);
        without it, this is rank 0, which starts the other ranks if the config asks for them."""
        self.model_dir = resolve_model_dir(config)
        hf_config = load_hf_config(self.model_dir)
        self.group, self.followers = (group, NO_FOLLOWERS) if group else start_ranks(config, hf_config)
        try:
            self._start(rank_config(config, self.group), hf_config)
        except BaseException:
            self.followers.close(timeout=1.0)  # they would wait in a collective for this rank
            raise

    def _start(self, config: EngineConfig, hf_config) -> None:
        self.config = config
        self.tokenizer_path = Path(config.model.tokenizer or self.model_dir)
        device = torch.device(config.device.resolved_device())
        torch.set_num_threads(config.device.resolved_threads())
        self.info = local_info(model_info(hf_config, self.model_dir), hf_config, self.group.world_size)
        self.max_model_len = self._max_model_len(config, self.info)
        dtype = resolve_dtype(config.model.dtype, hf_config, device)
        backend = get_backend(config.device.attention_backend, device.type)
        logger.info("loading %s onto %s (%s, %d CPU threads)", self.model_dir, device, dtype, torch.get_num_threads())
        self._check_fits_device(hf_config, backend, dtype, device)
        model = shard_model(MODEL_LOADERS[config.model.load_format](self.model_dir, backend, dtype, device), self.group)
        if config.model.quantization:
            model = quantize(model, config.model.quantization)
        draft = load_draft_model(config.speculative, self.info, self.max_model_len, self.tokenizer_path,
                                 lambda path: MODEL_LOADERS[config.model.load_format](path, backend, dtype, device),
                                 backend, dtype, device)
        self.runner = ModelRunner(config, model, self.info, device, dtype, str(self.tokenizer_path), draft,
                                  self.group)
        logger.info("sizing the KV pool%s", " and warming up" if device.type == "cuda" else "")
        num_blocks = self.runner.init_kv_cache(self.max_model_len)
        check_fits(num_blocks, config.cache.block_size, self.max_model_len)
        self.kv_cache = KVCacheManager(num_blocks, config.cache.block_size, config.cache.enable_prefix_caching)
        self.speculator = Speculator(config.speculative) if config.speculative else None
        self.scheduler = Scheduler(config.scheduler, self.kv_cache, self.max_model_len, speculator=self.speculator)
        self.eos_token_id = self.info.eos_token_ids[0] if self.info.eos_token_ids else None
        self._last_step = (0, 0)  # tokens and requests of the last step
        self._num_steps, self._step_seconds = 0, 0.0
        self._pending: StepHandle | None = None  # the launched step whose results are not applied yet
        self.overlap = config.scheduler.async_scheduling
        logger.info(
            "engine ready: %s on %s (%s), %d KV blocks of %d tokens, max_model_len %d",
            self.model_dir, device, dtype, num_blocks, config.cache.block_size, self.max_model_len,
        )

    def _check_fits_device(self, hf_config, backend, dtype: torch.dtype, device: torch.device) -> None:
        """Refuse at once, before any weight is read, what the backend or the GPU cannot take."""
        try:
            backend.check_head_dim(self.info.head_dim)
        except ValueError as exc:
            raise ConfigError(f"{exc} (this model's heads; the torch attention backend takes any size: "
                              "--attention-backend torch)") from None
        method = self.config.model.quantization
        if method and device.type not in QUANTIZATION_DEVICES[method]:
            raise ConfigError(f"quantization={method} runs on {' and '.join(QUANTIZATION_DEVICES[method])}, "
                              f"not on {device.type}")
        if self.config.cache.kv_cache_dtype != "auto" and (reason := fp8_unsupported_reason(device, backend.name)):
            raise ConfigError(reason)
        if device.type == "cuda":
            with torch.device("meta"):
                shape_only = ARCHITECTURES[architecture_of(hf_config, self.model_dir)](hf_config, backend)
            int4_checkpoint(shape_only, hf_config, dtype, self.model_dir)  # GPTQ/AWQ: their packed size
            check_gpu_memory(self.config, device, tensor_bytes(shape_only.to(dtype)) // self.group.world_size)

    def shutdown(self) -> None:
        """Free the engine's device memory (KV pool, graphs, weights); it cannot step again."""
        self._pending = None
        self.runner.shutdown()
        self.followers.close()

    @property
    def is_shut_down(self) -> bool:
        return self.runner.model is None

    @staticmethod
    def _max_model_len(config: EngineConfig, info) -> int:
        wanted = config.model.max_model_len
        if wanted is None:
            return info.max_position_embeddings
        if wanted > info.max_position_embeddings:
            raise ConfigError(
                f"max_model_len={wanted} is longer than the model's context "
                f"({info.max_position_embeddings} positions)"
            )
        return wanted

    def add_request(self, req: EngineRequest) -> None:
        """Queue a request. Raises ValueError for a request that can never run and
        QueueFullError when the waiting queue is at its bound."""
        self._validate(req)
        if req.eos_token_id is None:
            req.eos_token_id = self.eos_token_id
        extra_eos = [t for t in self.info.eos_token_ids if t != req.eos_token_id]
        params = req.sampling_params
        if extra_eos and not params.ignore_eos:
            req.sampling_params = params.clone(stop_token_ids=params.stop_token_ids + extra_eos)
        self.scheduler.add_request(req)

    def _validate(self, req: EngineRequest) -> None:
        n = len(req.prompt_token_ids)
        if n == 0:
            raise ValueError("the prompt is empty")
        if n >= self.max_model_len:
            raise ValueError(
                f"the prompt has {n} tokens, but the model's context is {self.max_model_len} "
                "tokens and at least one must be left to generate"
            )
        vocab = self.info.vocab_size
        bad = next((t for t in req.prompt_token_ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise ValueError(f"token id {bad} is outside the vocabulary (0..{vocab - 1})")

    def abort_requests(self, request_ids: list[str]) -> None:
        self.scheduler.abort_requests(request_ids)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests()

    def step(self) -> list[EngineOutput]:
        """Schedule and launch the next step, then apply the previous step's results: the
        CPU work of a step overlaps the GPU work of the one before it. A step that may
        propose speculative tokens needs the newest ids first, and a step that verifies
        some is applied at once (the next proposals start from what it accepted)."""
        start = time.perf_counter()
        outputs = self._apply_pending() if self._wants_fresh_ids() else []
        sched = self.scheduler.schedule()
        self.followers.send(sched)  # the other tensor-parallel ranks run the same step
        handle = self.runner.execute(sched)
        outputs += self._apply_pending()
        self._pending = handle
        if not self.overlap or sched.scheduled_spec_decode_tokens or not self.scheduler.has_unfinished_requests():
            outputs += self._apply_pending()
        self._last_step = (sched.total_num_scheduled_tokens, len(sched.num_scheduled_tokens))
        self._num_steps += 1
        self._step_seconds += time.perf_counter() - start
        return outputs

    @contextlib.contextmanager
    def speculation_paused(self):
        """No proposals inside the block (a benchmark's same-engine baseline); the
        acceptance counters keep their values."""
        speculator, self.speculator = self.speculator, None
        self.scheduler.speculator = None
        draft, self.runner.draft = self.runner.draft, None  # a draft model's forwards are speculation's cost
        try:
            yield
        finally:
            self.speculator = self.scheduler.speculator = speculator
            self.runner.draft = draft

    def _apply_pending(self) -> list[EngineOutput]:
        handle, self._pending = self._pending, None
        return self.scheduler.update_from_output(handle.result()) if handle is not None else []

    def _wants_fresh_ids(self) -> bool:
        return (self._pending is not None and self.speculator is not None
                and self.speculator.wants_fresh_ids(self.scheduler.running))

    def stats(self) -> EngineStats:
        prefix = self.kv_cache.stats
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            kv_cache_usage=self.kv_cache.usage(),
            num_blocks=self.kv_cache.num_blocks,
            prefix_cache_queries=prefix.queries,
            prefix_cache_hits=prefix.hits,
            num_preemptions=self.scheduler.num_preemptions,
            step_num_tokens=self._last_step[0],
            step_num_seqs=self._last_step[1],
            num_steps=self._num_steps,
            step_seconds=self._step_seconds,
            spec_decode=self.speculator.stats.snapshot() if self.speculator else None,
        )
