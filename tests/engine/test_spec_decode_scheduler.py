"""Speculative decoding in the scheduler: proposals, KV slots for drafts and their roll
back, truncation at stops, back-off. Plain Python with fake runner outputs."""

import pytest

from kvserve.config import ConfigError, EngineConfig, SchedulerConfig, SpeculativeConfig
from kvserve.engine.kv_cache_manager import KVCacheManager
from kvserve.engine.ngram_proposer import NgramIndex
from kvserve.engine.request import FinishReason
from kvserve.engine.scheduler import Scheduler
from kvserve.engine.scheduler_output import ModelRunnerOutput
from kvserve.engine.speculator import DRAFT_SLOT, Speculator
from tests.engine.factories import FakeClock, make_request

REPEAT = [10, 11, 12, 13, 10, 11, 12]  # its next token 13 makes the last 4 tokens repeat the first 4


def make(num_blocks=64, block_size=4, **spec) -> Scheduler:
    kv = KVCacheManager(num_blocks, block_size)
    speculator = Speculator(SpeculativeConfig(**spec))
    return Scheduler(SchedulerConfig(), kv, 256, clock=FakeClock(), speculator=speculator)


def verified(out, accept: int, token: int) -> ModelRunnerOutput:
    """Every request accepts its first `accept` drafts and samples `token` after them."""
    result = ModelRunnerOutput({rid: token for rid in out.num_scheduled_tokens})
    for rid, drafts in out.scheduled_spec_decode_tokens.items():
        result.accepted_token_ids[rid] = drafts[:accept]
    return result


def prefill(s: Scheduler, rid="r", tokens=REPEAT, first=13, max_tokens=50, **params):
    s.add_request(make_request(rid, tokens=list(tokens), max_tokens=max_tokens, **params))
    s.update_from_output(verified(s.schedule(), 0, first))
    return s.requests[rid]


def test_ngram_index_proposes_what_followed_the_longest_earlier_match():
    index = NgramIndex(1, 3)
    index.extend([1, 2, 3, 9, 2, 3, 4, 5, 1, 2, 3])
    assert index.propose(3) == [9, 2, 3]  # [1, 2, 3] occurred at the start (the shorter [2, 3]: before 4)
    index.extend([7])
    assert index.propose(2) == []  # 7 never occurred before
    assert NgramIndex(2, 2).propose(1) == []  # too short to match anything


def test_ngram_index_prefers_the_longest_suffix():
    index = NgramIndex(1, 4)
    index.extend([5, 6, 1, 8, 7, 6, 1, 9, 7, 6, 1])
    assert index.propose(1) == [9]  # [7, 6, 1] last occurred before 9 (the suffix [6, 1] alone: also 9)
    index = NgramIndex(1, 4)
    index.extend([7, 6, 1, 8, 5, 6, 1, 9, 7, 6, 1])
    assert index.propose(1) == [8]  # [7, 6, 1] occurred before 8; the shorter [6, 1] last before 9


def test_a_proposal_is_scheduled_with_slots_for_every_draft_and_rolled_back_when_rejected():
    s = make(num_speculative_tokens=4)
    req = prefill(s)
    out = s.schedule()
    assert out.scheduled_spec_decode_tokens == {"r": [10, 11, 12, 13]}
    assert out.num_scheduled_tokens == {"r": 5}  # the new token 13 and four drafts
    assert req.num_computed_tokens == 12 and len(s.kv_cache.block_ids("r")) == 3  # 12 slots of 4
    [o] = s.update_from_output(verified(out, 2, 99))
    assert o.new_token_ids == [10, 11, 99]
    assert req.all_token_ids[-4:] == [13, 10, 11, 99]
    assert req.num_computed_tokens == req.num_tokens - 1 == 10  # drafts 12 and 13 rolled back
    assert (req.metrics.num_draft_tokens, req.metrics.num_accepted_tokens) == (4, 2)
    stats = s.speculator.stats
    assert (stats.num_drafts, stats.num_draft_tokens, stats.num_accepted_tokens) == (1, 4, 2)
    assert stats.accepted_per_pos == [1, 1, 0, 0]


def test_drafts_never_pass_max_tokens():
    s = make(num_speculative_tokens=4)
    req = prefill(s, max_tokens=3)
    out = s.schedule()
    assert out.scheduled_spec_decode_tokens == {"r": [10]}  # one output, one draft, one more token: 3
    [o] = s.update_from_output(verified(out, 1, 99))
    assert o.new_token_ids == [10, 99] and o.finish_reason == FinishReason.LENGTH
    assert req.num_output_tokens == 3


def test_a_stop_inside_an_accepted_run_drops_what_follows():
    s = make(num_speculative_tokens=4)
    req = prefill(s, tokens=[10, 11, 1, 12, 10], first=11, max_tokens=50)  # 1 is the request's EOS
    out = s.schedule()
    assert out.scheduled_spec_decode_tokens == {"r": [1, 12, 10, 11]}
    [o] = s.update_from_output(verified(out, 3, 99))
    assert o.new_token_ids == [1] and o.finish_reason == FinishReason.STOP
    assert req.is_finished and "r" not in s.requests and s.kv_cache.num_free_blocks == 64


def test_requests_that_gain_nothing_back_off_then_try_again():
    s = make(num_speculative_tokens=2, backoff_misses=2, backoff_steps=3)
    prefill(s, max_tokens=100)
    proposed = []
    for _ in range(9):
        out = s.schedule()
        proposed.append(bool(out.scheduled_spec_decode_tokens))
        s.update_from_output(verified(out, 0, 13))  # every draft rejected
    assert proposed == [True, True, False, False, False, True, True, False, False]


def test_no_speculation_above_the_batch_size_limit_or_with_ids_in_flight():
    s = make(num_speculative_tokens=2, disable_by_batch_size=1)
    prefill(s, "a")
    prefill(s, "b")
    assert s.schedule().scheduled_spec_decode_tokens == {}  # two running, limit one
    s = make(num_speculative_tokens=2)
    prefill(s, "a")
    first = s.schedule()  # launched, its ids not applied yet (async scheduling)
    second = s.schedule()
    assert first.scheduled_spec_decode_tokens and not second.scheduled_spec_decode_tokens


def test_a_full_pool_drops_the_drafts_before_preempting_anyone():
    s = make(num_blocks=2, block_size=4, num_speculative_tokens=4)
    req = prefill(s)  # 8 tokens fill both blocks; the drafts would need a third
    out = s.schedule()
    assert out.num_scheduled_tokens == {"r": 1} and out.scheduled_spec_decode_tokens == {}
    assert s.num_preemptions == 0 and req.num_computed_tokens == 8


@pytest.mark.parametrize("bad, message", [
    ({"method": "eagle"}, "method must be one of"),
    ({"num_speculative_tokens": 0}, "num_speculative_tokens must be in 1..16"),
    ({"prompt_lookup_min": 3, "prompt_lookup_max": 2}, "prompt_lookup_min <= prompt_lookup_max"),
    ({"num_speculative_tokens": "4"}, "num_speculative_tokens must be int"),
    ({"draft": 1}, "unknown key"),
    ({"method": "draft_model"}, "draft_model needs a model"),
    ({"model": "./draft", "num_speculative_tokens": 9}, "in 1..8 with a draft model"),
    ({"method": "ngram", "model": "./draft"}, "model is the draft model of method draft_model"),
    ({"model": 3}, "model must be str"),
    ("{not json", "not valid JSON"),
])
def test_bad_speculative_configs_are_refused_with_the_setting_named(bad, message):
    with pytest.raises(ConfigError, match=message):
        EngineConfig.from_flat(speculative_config=bad)


def test_the_json_of_the_flag_and_the_mapping_of_the_api_give_one_config():
    text = '{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 5, "prompt_lookup_min": 2}'
    assert EngineConfig.from_flat(speculative_config=text).speculative == SpeculativeConfig(
        num_speculative_tokens=3, prompt_lookup_max=5, prompt_lookup_min=2)
    assert EngineConfig.from_flat().speculative is None


def test_the_yaml_mapping_and_the_flag_reach_the_engine_config(tmp_path):
    import argparse

    from kvserve.cli.engine_args import add_engine_args, engine_config_from_args

    parser = argparse.ArgumentParser()
    add_engine_args(parser)
    path = tmp_path / "engine.yaml"
    path.write_text("speculative_config:\n  method: ngram\n  num_speculative_tokens: 2\n")
    from_file = engine_config_from_args(parser.parse_args(["--config", str(path)]))
    assert from_file.speculative == SpeculativeConfig(num_speculative_tokens=2)
    flag = engine_config_from_args(parser.parse_args(["--config", str(path), "--speculative-config",
                                                      '{"num_speculative_tokens": 3}']))
    assert flag.speculative.num_speculative_tokens == 3  # the flag wins over the file


def test_a_config_with_a_draft_model_and_no_method_is_the_draft_model_method():
    spec = EngineConfig.from_flat(speculative_config='{"model": "./draft", "num_speculative_tokens": 3}').speculative
    assert (spec.method, spec.model, spec.num_speculative_tokens) == ("draft_model", "./draft", 3)


def test_a_draft_model_reserves_k_slots_for_the_runner_and_is_rolled_back_like_ngram():
    s = make(method="draft_model", model="./draft", num_speculative_tokens=3)
    req = prefill(s, tokens=[1, 2, 3, 4, 5], first=6)  # no repetition: an n-gram would propose nothing
    out = s.schedule()
    assert out.scheduled_spec_decode_tokens == {"r": [DRAFT_SLOT] * 3}  # the runner's draft model fills them in
    assert out.num_scheduled_tokens == {"r": 4} and req.num_computed_tokens == 9
    result = ModelRunnerOutput({"r": 9}, accepted_token_ids={"r": [7, 8]})  # the runner's drafts 7, 8 (and a third)
    s.update_from_output(result)
    assert req.output_token_ids == [6, 7, 8, 9] and req.num_computed_tokens == 8
    assert s.speculator.stats.num_draft_tokens == 3 and s.speculator.stats.num_accepted_tokens == 2
