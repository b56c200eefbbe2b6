"""Sampling parameters, with vLLM's field names so that vLLM offline code runs unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field

from kvserve.structured.spec import StructuredOutputs

_MAX_LOGPROBS = 20  # the OpenAI API's own cap on top_logprobs


@dataclass
class SamplingParams:
    """How one request samples. Validated when built; a bad value raises ValueError naming it."""

    n: int = 1  # completions per prompt; copies share the prompt's KV blocks
    max_tokens: int | None = 16  # new tokens at most; None = up to the model's context
    min_tokens: int = 0  # EOS and stop_token_ids are masked until this many are out
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus mass kept, in (0, 1]
    top_k: int = 0  # 0 or -1 = all tokens
    min_p: float = 0.0  # drop tokens under min_p * p(best)
    presence_penalty: float = 0.0  # OpenAI semantics, on generated tokens, [-2, 2]
    frequency_penalty: float = 0.0  # OpenAI semantics, on generated tokens, [-2, 2]
    repetition_penalty: float = 1.0  # HF semantics, on prompt and generated tokens, > 0
    seed: int | None = None  # same seed, same output, whatever else shares the batch
    stop: list[str] | str | None = None  # strings that end the text (not included)
    stop_token_ids: list[int] | None = None  # token ids that end generation
    ignore_eos: bool = False  # keep going past EOS (benchmarks)
    logprobs: int | None = None  # return the sampled token's logprob and this many top ones
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    structured: StructuredOutputs | None = None  # a grammar the output must follow (constrained decoding)
    extra_args: dict = field(default_factory=dict)  # free-form, passed through untouched

    def __post_init__(self) -> None:
        if self.stop is None:
            self.stop = []
        elif isinstance(self.stop, str):
            self.stop = [self.stop]
        else:
            self.stop = list(self.stop)
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.top_k == -1:
            self.top_k = 0
        self._validate()

    def _validate(self) -> None:
        checks = [
            (self.n >= 1, "n", "must be at least 1"),
            (self.max_tokens is None or self.max_tokens >= 1, "max_tokens", "must be at least 1"),
            (self.min_tokens >= 0, "min_tokens", "must be non-negative"),
            (
                self.max_tokens is None or self.min_tokens <= self.max_tokens,
                "min_tokens",
                "must not exceed max_tokens",
            ),
            (self.temperature >= 0.0, "temperature", "must be non-negative"),
            (0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]"),
            (self.top_k >= 0, "top_k", "must be -1, 0 (disabled) or positive"),
            (0.0 <= self.min_p <= 1.0, "min_p", "must be in [0, 1]"),
            (-2.0 <= self.presence_penalty <= 2.0, "presence_penalty", "must be in [-2, 2]"),
            (-2.0 <= self.frequency_penalty <= 2.0, "frequency_penalty", "must be in [-2, 2]"),
            (0.0 < self.repetition_penalty <= 10.0, "repetition_penalty", "must be in (0, 10]"),
            (
                self.logprobs is None or 0 <= self.logprobs <= _MAX_LOGPROBS,
                "logprobs",
                f"must be in [0, {_MAX_LOGPROBS}]",
            ),
            (all(isinstance(s, str) and s for s in self.stop), "stop", "must be non-empty strings"),
            (all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids), "stop_token_ids",
             "must be non-negative integers"),
        ]
        for ok, name, message in checks:
            if not ok:
                raise ValueError(f"{name} {message}, got {getattr(self, name)!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5

    def clone(self, **changes) -> "SamplingParams":
        values = {f: getattr(self, f) for f in self.__dataclass_fields__}
        values.update(changes)
        return SamplingParams(**values)
