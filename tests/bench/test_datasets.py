"""Workloads: sizes, ranges, seeds, ShareGPT parsing and the prefix (tenant) layout."""

from __future__ import annotations

import json
import random

import pytest

from kvserve.bench.datasets import DatasetConfig, load_samples, text_of_tokens
from kvserve.bench.tokens import LocalTokenizer, WordCounter


def test_random_prompts_have_the_asked_lengths_with_words():
    samples = load_samples(DatasetConfig("random", num_prompts=20, input_len=50, output_len=7), WordCounter())
    assert len(samples) == 20
    assert all(len(s.prompt.split()) == s.prompt_len == 50 and s.output_len == 7 for s in samples)
    assert len({s.prompt for s in samples}) == 20  # distinct prompts: no accidental cache sharing


def test_range_ratio_spreads_lengths_within_bounds():
    cfg = DatasetConfig("random", num_prompts=200, input_len=100, output_len=20, range_ratio=0.5)
    samples = load_samples(cfg, WordCounter())
    inputs, outputs = [s.prompt_len for s in samples], [s.output_len for s in samples]
    assert 50 <= min(inputs) < 60 and 140 < max(inputs) <= 150
    assert 10 <= min(outputs) and max(outputs) <= 30 and len(set(outputs)) > 10


def test_same_seed_same_workload_other_seed_other_workload():
    cfg = DatasetConfig("random", num_prompts=5, input_len=30, range_ratio=0.3, seed=7)
    assert load_samples(cfg, WordCounter()) == load_samples(cfg, WordCounter())
    other = DatasetConfig("random", num_prompts=5, input_len=30, range_ratio=0.3, seed=8)
    assert load_samples(other, WordCounter()) != load_samples(cfg, WordCounter())


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory):
    from tests.conftest import build_tokenizer

    path = tmp_path_factory.mktemp("tok")
    build_tokenizer(path)
    return LocalTokenizer(path)


def test_prompts_sized_with_a_real_tokenizer_come_close_without_passing(bpe_tokenizer):
    rng = random.Random(0)
    for target in (1, 17, 64, 200, 200, 200):
        text, measured = text_of_tokens(target, bpe_tokenizer, rng)
        assert measured == bpe_tokenizer.count(text)
        # words are several tokens with this tiny vocabulary; letters fill the gap to within one
        assert target - 1 <= measured <= target


def _write_sharegpt(path, conversations):
    data = [{"id": str(i), "conversations": c} for i, c in enumerate(conversations)]
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_sharegpt_takes_first_question_and_answer_length(tmp_path):
    path = _write_sharegpt(tmp_path / "sg.json", [
        [{"from": "human", "value": "what is a b c"}, {"from": "gpt", "value": "one two three four five"}],
        [{"from": "human", "value": "only a question"}],  # no answer: skipped
        [{"from": "human", "value": "x y"}, {"from": "gpt", "value": "z"}, {"from": "human", "value": "more"}],
    ])
    samples = load_samples(DatasetConfig("sharegpt", num_prompts=4, path=path, seed=1), WordCounter())
    assert sorted({(s.prompt, s.prompt_len, s.output_len) for s in samples}) == [("what is a b c", 5, 5), ("x y", 2, 1)]
    assert len(samples) == 4  # the two usable conversations, cycled
    fixed = load_samples(DatasetConfig("sharegpt", num_prompts=2, path=path, sharegpt_output_len=9), WordCounter())
    assert {s.output_len for s in fixed} == {9}


def test_sharegpt_without_usable_conversations_is_an_error(tmp_path):
    path = _write_sharegpt(tmp_path / "sg.json", [[{"from": "human", "value": "alone"}]])
    with pytest.raises(ValueError, match="no conversation"):
        load_samples(DatasetConfig("sharegpt", num_prompts=1, path=path), WordCounter())


def test_prefix_workload_shares_one_system_prompt_per_tenant():
    cfg = DatasetConfig("prefix", num_prompts=12, num_tenants=3, prefix_len=40, question_len=6, output_len=5)
    samples = load_samples(cfg, WordCounter())
    by_tenant = {}
    for s in samples:
        by_tenant.setdefault(s.tenant, []).append(s)
    assert sorted(by_tenant) == ["tenant-0", "tenant-1", "tenant-2"]
    assert all(len(group) == 4 and len({s.system for s in group}) == 1 for group in by_tenant.values())
    assert len({group[0].system for group in by_tenant.values()}) == 3
    assert len({s.prompt for s in samples}) == 12  # every question distinct
    assert all(s.prompt_len == 46 and len(s.system.split()) == 40 and s.output_len == 5 for s in samples)
    assert [s.tenant for s in samples] != sorted(s.tenant for s in samples)  # interleaved, not in blocks


def test_token_ids_are_exactly_the_offline_workloads_requests():
    from kvserve.bench.offline import WORKLOADS, make_requests

    samples = load_samples(DatasetConfig("token-ids", offline_workload="smoke", vocab_size=500, seed=3), WordCounter())
    expected = make_requests(WORKLOADS["smoke"], 500, 3)
    assert [(list(s.prompt_token_ids), s.output_len) for s in samples] == expected
    assert [s.prompt_len for s in samples] == [len(ids) for ids, _ in expected] and {s.prompt for s in samples} == {""}
    first = load_samples(DatasetConfig("token-ids", num_prompts=3, vocab_size=151936), WordCounter())
    throughput = make_requests(WORKLOADS["throughput"], 151936, 0)
    assert [(list(s.prompt_token_ids), s.output_len) for s in first] == throughput[:3]


def test_num_prompts_defaults_to_100_or_to_the_whole_offline_workload():
    assert DatasetConfig("random").num_prompts == 100
    assert DatasetConfig("token-ids", vocab_size=10).num_prompts == 256
    assert DatasetConfig("token-ids", offline_workload="batch1", vocab_size=10).num_prompts == 1


@pytest.mark.parametrize("bad, message", [
    (dict(), "needs the served model's vocabulary size"),
    (dict(vocab_size=0), "vocab_size must be at least 1"),
    (dict(vocab_size=10, offline_workload="nope"), "offline workload must be one of"),
    (dict(vocab_size=10, offline_workload="smoke", num_prompts=9), "has 8 requests, fewer than num_prompts=9"),
])
def test_bad_token_ids_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        DatasetConfig("token-ids", **bad)


@pytest.mark.parametrize("bad", [
    dict(name="nope"), dict(num_prompts=0), dict(range_ratio=1.0), dict(name="sharegpt"), dict(num_tenants=0),
])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        DatasetConfig(**bad)
