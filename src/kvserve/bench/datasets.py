"""Benchmark workloads: lists of prompts with the output length to ask for.

Four kinds, picked by name from BUILDERS: `random` (sized prompts of random words),
`sharegpt` (first human/gpt turns of a ShareGPT-format JSON file), `prefix` (tenants
that each share a system prompt, followed by distinct questions: the workload that
prefix caching and prefix-aware routing are judged on) and `token-ids` (the request
list of a `kvserve bench offline` workload, sent as token ids, so that served and
offline throughput are measured on the same requests). Everything is seeded.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kvserve.bench.offline import WORKLOADS, make_requests
from kvserve.bench.tokens import TokenCounter

# Plain words the random prompts are drawn from; varied enough that two prompts
# almost never share a leading KV block by chance.
WORDS = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art war "
    "history party result change morning reason research girl guy moment air teacher force "
    "education river garden light bread engine paper window music cloud table stone market"
).split()


@dataclass(frozen=True)
class SampleRequest:
    """One request of a workload; `prompt_len` is the counter's measure, not the server's."""

    prompt: str  # the user text (for `prefix`, the question alone)
    prompt_len: int  # prompt tokens as the dataset's counter measured them (system included)
    output_len: int  # max_tokens to ask for
    system: str | None = None  # shared system prompt, for the `prefix` workload
    tenant: str | None = None  # which tenant the request belongs to, for `prefix`
    prompt_token_ids: tuple[int, ...] | None = None  # sent instead of the text (`token-ids`; `prompt` is "")


@dataclass
class DatasetConfig:
    """Which workload to build and its sizes; validated when built."""

    name: str = "random"  # random | sharegpt | prefix | token-ids
    num_prompts: int | None = None  # requests in the workload (sent at most); None = 100 (token-ids: all of it)
    input_len: int = 256  # random: prompt tokens (centre of the range)
    output_len: int = 128  # random, prefix: output tokens; sharegpt: override if set > 0
    range_ratio: float = 0.0  # random: lengths uniform in [len*(1-r), len*(1+r)]
    seed: int = 0  # every random choice of the workload derives from it
    path: str | None = None  # sharegpt: the JSON file
    num_tenants: int = 4  # prefix: tenants, each with its own system prompt
    prefix_len: int = 512  # prefix: tokens of each tenant's system prompt
    question_len: int = 64  # prefix: tokens of each question
    sharegpt_output_len: int = 0  # sharegpt: fixed output length; 0 = the gpt turn's length
    offline_workload: str = "throughput"  # token-ids: a workload name of `kvserve bench offline`
    vocab_size: int | None = None  # token-ids: the served model's vocabulary (ids drawn from 0..vocab_size-1)

    def __post_init__(self) -> None:
        if self.num_prompts is None:
            self.num_prompts = self._default_num_prompts()
        checks = [
            (self.name in BUILDERS, f"dataset must be one of {sorted(BUILDERS)}, got {self.name!r}"),
            (self.num_prompts >= 1, f"num_prompts must be at least 1, got {self.num_prompts}"),
            (self.input_len >= 1, f"input_len must be at least 1, got {self.input_len}"),
            (self.output_len >= 1, f"output_len must be at least 1, got {self.output_len}"),
            (0.0 <= self.range_ratio < 1.0, f"range_ratio must be in [0, 1), got {self.range_ratio}"),
            (self.name != "sharegpt" or bool(self.path), "the sharegpt dataset needs a path"),
            (self.num_tenants >= 1, f"num_tenants must be at least 1, got {self.num_tenants}"),
            (self.prefix_len >= 1, f"prefix_len must be at least 1, got {self.prefix_len}"),
            (self.question_len >= 1, f"question_len must be at least 1, got {self.question_len}"),
        ]
        if self.name == "token-ids":
            checks += self._token_ids_checks()
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def _default_num_prompts(self) -> int:
        if self.name == "token-ids" and self.offline_workload in WORKLOADS:
            return WORKLOADS[self.offline_workload].num_requests
        return 100

    def _token_ids_checks(self) -> list[tuple[bool, str]]:
        if self.offline_workload not in WORKLOADS:
            return [(False, f"offline workload must be one of {sorted(WORKLOADS)}, got {self.offline_workload!r}")]
        size = WORKLOADS[self.offline_workload].num_requests
        return [
            (self.vocab_size is not None, "the token-ids dataset needs the served model's vocabulary size "
                                          "(--vocab-size; 151936 for --arch qwen3-0.6b)"),
            (self.vocab_size is None or self.vocab_size >= 1, f"vocab_size must be at least 1, got {self.vocab_size}"),
            (self.num_prompts <= size, f"the offline workload {self.offline_workload!r} has {size} requests, "
                                       f"fewer than num_prompts={self.num_prompts}"),
        ]


def text_of_tokens(target: int, counter: TokenCounter, rng: random.Random) -> tuple[str, int]:
    """Random words whose token count is as close to `target` as possible without passing it.

    Binary search on the number of words (every word is at least one token, so `target`
    words are enough), then single letters fill what a whole word would overshoot.
    Returns the text and its measured length.
    """
    words = rng.choices(WORDS, k=target)
    full = counter.count(" ".join(words))
    if full <= target:
        return " ".join(words), full
    lo, hi = 0, target  # count(words[:lo]) <= target < count(words[:hi])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if counter.count(" ".join(words[:mid])) <= target:
            lo = mid
        else:
            hi = mid
    return _fill(" ".join(words[:lo]), target, counter, rng)


def _fill(text: str, target: int, counter: TokenCounter, rng: random.Random) -> tuple[str, int]:
    """Append single letters while the count stays within `target`."""
    measured = counter.count(text)
    while measured < target:
        longer = f"{text} {rng.choice('abcdefghijklmnopqrstuvwxyz')}".lstrip()
        longer_count = counter.count(longer)
        if longer_count > target:
            break
        text, measured = longer, longer_count
    return text, measured


def _length(centre: int, ratio: float, rng: random.Random) -> int:
    low, high = max(1, round(centre * (1 - ratio))), max(1, round(centre * (1 + ratio)))
    return rng.randint(low, high)


def random_dataset(cfg: DatasetConfig, counter: TokenCounter) -> list[SampleRequest]:
    rng = random.Random(cfg.seed)
    samples = []
    for _ in range(cfg.num_prompts):
        input_len = _length(cfg.input_len, cfg.range_ratio, rng)
        output_len = _length(cfg.output_len, cfg.range_ratio, rng)
        text, measured = text_of_tokens(input_len, counter, rng)
        samples.append(SampleRequest(text, measured, output_len))
    return samples


def _sharegpt_pairs(path: str) -> list[tuple[str, str]]:
    """(first human turn, the gpt turn after it) of every conversation that has both."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    pairs = []
    for item in data:
        turns = item.get("conversations") or item.get("conversation") or []
        if len(turns) >= 2 and turns[0].get("value") and turns[1].get("value"):
            pairs.append((turns[0]["value"], turns[1]["value"]))
    return pairs


def sharegpt_dataset(cfg: DatasetConfig, counter: TokenCounter) -> list[SampleRequest]:
    pairs = _sharegpt_pairs(cfg.path or "")
    if not pairs:
        raise ValueError(f"{cfg.path} holds no conversation with a human turn and an answer")
    random.Random(cfg.seed).shuffle(pairs)
    samples = []
    for i in range(cfg.num_prompts):  # cycle through a file shorter than num_prompts
        prompt, answer = pairs[i % len(pairs)]
        output_len = cfg.sharegpt_output_len or max(1, counter.count(answer))
        samples.append(SampleRequest(prompt, counter.count(prompt), output_len))
    return samples


def prefix_dataset(cfg: DatasetConfig, counter: TokenCounter) -> list[SampleRequest]:
    rng = random.Random(cfg.seed)
    systems = [text_of_tokens(cfg.prefix_len, counter, rng) for _ in range(cfg.num_tenants)]
    samples = []
    for i in range(cfg.num_prompts):
        tenant = i % cfg.num_tenants
        question, question_len = text_of_tokens(cfg.question_len, counter, rng)
        system, system_len = systems[tenant]
        samples.append(SampleRequest(question, system_len + question_len, cfg.output_len, system, f"tenant-{tenant}"))
    rng.shuffle(samples)
    return samples


def token_ids_dataset(cfg: DatasetConfig, counter: TokenCounter) -> list[SampleRequest]:
    """The first `num_prompts` requests of `kvserve bench offline --workload <offline_workload>
    --seed <seed>` on a model of `vocab_size` tokens: the same ids, the same output lengths.
    The counter is not needed: the prompts are token ids already."""
    requests = make_requests(WORKLOADS[cfg.offline_workload], cfg.vocab_size, cfg.seed)
    return [SampleRequest("", len(ids), output_len, prompt_token_ids=tuple(ids))
            for ids, output_len in requests[: cfg.num_prompts]]


BUILDERS: dict[str, Callable[[DatasetConfig, TokenCounter], list[SampleRequest]]] = {
    "random": random_dataset,
    "sharegpt": sharegpt_dataset,
    "prefix": prefix_dataset,
    "token-ids": token_ids_dataset,
}


def load_samples(cfg: DatasetConfig, counter: TokenCounter) -> list[SampleRequest]:
    """The workload `cfg` describes, sized with `counter`."""
    return BUILDERS[cfg.name](cfg, counter)
