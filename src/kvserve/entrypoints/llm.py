"""The offline API: `LLM(model=...).generate(prompts, params)` and `.chat(messages, params)`.

Shaped like vLLM's `LLM` so that code written for it runs unchanged.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Sequence

from kvserve.config import EngineConfig
from kvserve.engine.fan_out import fan_out
from kvserve.engine.llm_engine import LLMEngine
from kvserve.engine.output_processor import CompletionDelta
from kvserve.models.hub import resolve_model
from kvserve.models.shapes import with_shape_dir
from kvserve.outputs import CompletionOutput, RequestOutput
from kvserve.sampling_defaults import load_sampling_defaults
from kvserve.sampling_params import SamplingParams
from kvserve.tokenizer import apply_chat_template

# vLLM constructor arguments that have one meaningful value here
_ACCEPTED_DEFAULTS = {"trust_remote_code": False, "tokenizer_mode": "auto"}


class LLM:
    def __init__(self, model: str | None = None, **kwargs) -> None:
        for name, only in _ACCEPTED_DEFAULTS.items():
            value = kwargs.pop(name, only)
            if value != only:
                raise ValueError(f"{name}={value!r} is not supported (only {only!r})")
        self._start(EngineConfig.from_flat(model=model, **kwargs))

    @classmethod
    def from_config(cls, config: EngineConfig) -> "LLM":
        llm = cls.__new__(cls)
        llm._start(config)
        return llm

    def _start(self, config: EngineConfig) -> None:
        # a model id becomes its local snapshot; an `arch` a temporary shape directory, kept
        # as long as this LLM lives
        config, self._shape_dir = with_shape_dir(resolve_model(config))
        self.engine = LLMEngine(config)
        self.sampling_defaults = load_sampling_defaults(config.model.model, config.model.generation_config)
        self._ids = itertools.count()
        # `del llm` (or the LLM going out of scope) frees the device memory at once
        self._finalizer = weakref.finalize(self, self.engine.shutdown)

    def shutdown(self) -> None:
        """Free the engine's device memory (KV pool, CUDA graphs, weights, pinned buffers) now;
        the LLM cannot generate afterwards. `del llm` and leaving a `with LLM(...)` block do
        the same."""
        self._finalizer()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    def get_tokenizer(self):
        return self.engine.tokenizer

    def get_default_sampling_params(self) -> SamplingParams:
        """What `generate`/`chat` use when given no SamplingParams: the model's recommended
        sampling (its generation_config.json; see kvserve.sampling_defaults), as vLLM's."""
        return self.sampling_defaults.params()

    def generate(
        self,
        prompts: str | dict | Sequence[str | dict],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        priority: Sequence[int] | None = None,
    ) -> list[RequestOutput]:
        """Prompts are strings or {"prompt_token_ids": [...]}; outputs come back in order."""
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        params = self._params_per_prompt(sampling_params, len(prompts))
        requests = []
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            text, token_ids = self._tokenize(prompt)
            requests.append(self._add(text, token_ids, p, priority[i] if priority else 0))
        self._run(requests, use_tqdm)
        return [r.output for r in requests]

    def chat(
        self,
        messages: list[dict] | list[list[dict]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        add_generation_prompt: bool = True,
    ) -> list[RequestOutput]:
        """One conversation (a list of messages) or several; applies the chat template."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        tokenizer = self.engine.tokenizer
        prompts = [
            {"prompt_token_ids": apply_chat_template(tokenizer, conv, add_generation_prompt=add_generation_prompt)}
            for conv in conversations
        ]
        return self.generate(prompts, sampling_params, use_tqdm=use_tqdm)

    def _params_per_prompt(self, sampling_params, count: int) -> list[SamplingParams]:
        if sampling_params is None:
            return [self.get_default_sampling_params()] * count
        if isinstance(sampling_params, SamplingParams):
            return [sampling_params] * count
        if len(sampling_params) != count:
            raise ValueError(f"{len(sampling_params)} sampling params for {count} prompts")
        return list(sampling_params)

    def _tokenize(self, prompt: str | dict) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            return prompt, self.engine.tokenizer.encode(prompt)
        if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
            return prompt.get("prompt"), list(prompt["prompt_token_ids"])
        if isinstance(prompt, dict) and "prompt" in prompt:
            return prompt["prompt"], self.engine.tokenizer.encode(prompt["prompt"])
        raise TypeError(f"a prompt is a string or a dict with prompt_token_ids, got {type(prompt).__name__}")

    def _add(self, text: str | None, token_ids: list[int], params: SamplingParams, priority: int) -> "_Pending":
        request_id = str(next(self._ids))
        pending = _Pending(request_id, text, token_ids, params)
        for index, (child, child_params) in enumerate(fan_out(request_id, params)):
            pending.children[child] = index
            self.engine.add_request(child, token_ids, child_params, priority)
        return pending

    def _run(self, requests: list["_Pending"], use_tqdm: bool) -> None:
        owner = {child: r for r in requests for child in r.children}
        bar = _progress(len(requests), use_tqdm)
        while self.engine.has_unfinished_requests():
            for delta in self.engine.step():
                request = owner[delta.request_id]
                request.apply(delta)
                if bar is not None and request.output.finished:
                    bar.update(1)
        if bar is not None:
            bar.close()


class _Pending:
    """One prompt's output, filled in as its completions' deltas arrive."""

    def __init__(self, request_id: str, text: str | None, token_ids: list[int], params: SamplingParams) -> None:
        self.children: dict[str, int] = {}
        self.output = RequestOutput(request_id, text, token_ids, [
            CompletionOutput(i, "", [], logprobs=[] if params.logprobs is not None else None)
            for i in range(params.n)
        ])

    def apply(self, delta: CompletionDelta) -> None:
        completion = self.output.outputs[self.children[delta.request_id]]
        completion.text += delta.text
        completion.token_ids.extend(delta.token_ids)
        if delta.logprobs is not None:
            completion.logprobs.extend(delta.logprobs)
            chosen = [pos[tid].logprob for pos, tid in zip(delta.logprobs, delta.token_ids)]
            completion.cumulative_logprob = (completion.cumulative_logprob or 0.0) + sum(chosen)
        completion.finish_reason = delta.finish_reason
        completion.stop_reason = delta.stop_reason
        self.output.num_cached_tokens = delta.num_cached_tokens
        if delta.finished and delta.metrics is not None:  # speculative decoding's figures, summed over the n
            for key in ("num_draft_tokens", "num_accepted_tokens"):
                self.output.metrics[key] = self.output.metrics.get(key, 0) + getattr(delta.metrics, key)
        self.output.finished = all(c.finish_reason is not None for c in self.output.outputs)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="generate", unit="prompt")
