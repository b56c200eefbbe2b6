"""LLMEngine: a synchronous, in-process frontend (tokenizer + output processing) over EngineCore."""

from __future__ import annotations

from kvserve.config import EngineConfig
from kvserve.engine.engine_core import EngineCore
from kvserve.engine.output_processor import CompletionDelta, OutputProcessor
from kvserve.engine.request import EngineRequest
from kvserve.sampling_params import SamplingParams
from kvserve.tokenizer import load_tokenizer


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.core = EngineCore(config)
        self.tokenizer = load_tokenizer(self.core.tokenizer_path)
        self.processor = OutputProcessor(self.tokenizer)

    @property
    def max_model_len(self) -> int:
        return self.core.max_model_len

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, priority: int = 0) -> None:
        """Queue one engine request (n == 1; callers fan out n > 1 with kvserve.engine.fan_out)."""
        if self.core.is_shut_down:
            raise RuntimeError("this engine was shut down: create a new LLM to generate")
        eos = self.tokenizer.eos_token_id
        self.core.add_request(EngineRequest(request_id, prompt_token_ids, params, priority, eos_token_id=eos))
        self.processor.add_request(request_id, prompt_token_ids, params)

    def abort(self, request_ids: list[str]) -> None:
        self.core.abort_requests(request_ids)
        for rid in request_ids:
            self.processor.abort(rid)

    def has_unfinished_requests(self) -> bool:
        return self.core.has_unfinished_requests()

    def shutdown(self) -> None:
        """Free the engine's device memory; it cannot step again."""
        self.core.shutdown()

    def step(self) -> list[CompletionDelta]:
        processed = self.processor.process(self.core.step())
        if processed.abort_ids:
            self.core.abort_requests(processed.abort_ids)
        return processed.deltas
