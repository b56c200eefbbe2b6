"""EngineCore's overlapped loop on a tiny real model: step N+1 is scheduled and launched
before step N's sampled ids are applied."""

import pytest

from kvserve.config import ConfigError, EngineConfig
from kvserve.engine.engine_core import EngineCore
from kvserve.engine.request import EngineRequest, FinishReason
from kvserve.sampling_params import SamplingParams
from tests.conftest import build_model


def make_core(model_dir, **settings) -> EngineCore:
    return EngineCore(EngineConfig.from_flat(model=str(model_dir), kv_cache_gib=0.05, **settings))


def drive(core: EngineCore) -> tuple[dict[str, list[int]], dict[str, FinishReason], int]:
    tokens, reasons, computed = {}, {}, 0
    while core.has_unfinished_requests():
        for out in core.step():
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
            if out.finish_reason is not None:
                reasons[out.request_id] = out.finish_reason
        computed += core.stats().step_num_tokens
    return tokens, reasons, computed


def test_length_limits_cost_no_extra_step_and_a_stop_costs_one(tiny_llama):
    core = make_core(tiny_llama)
    prompt = list(range(20, 45))
    core.add_request(EngineRequest("len", prompt, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)))
    tokens, reasons, computed = drive(core)
    assert len(tokens["len"]) == 12 and reasons["len"] == FinishReason.LENGTH
    assert computed == len(prompt) + 12 - 1  # the last sampled token is never computed
    stop_at = tokens["len"][4]  # greedy: the same ids again, so this one comes fifth
    core.add_request(EngineRequest("stop", prompt, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True,
                                                                  stop_token_ids=[stop_at])))
    tokens2, reasons2, computed2 = drive(core)
    assert tokens2["stop"] == tokens["len"][: tokens["len"].index(stop_at) + 1]
    assert reasons2["stop"] == FinishReason.STOP
    hits = core.stats().prefix_cache_hits  # the second prompt's full blocks came from the cache
    assert computed2 == len(prompt) - hits + len(tokens2["stop"])  # one discarded step after the stop
    assert core.kv_cache.usage() == 0.0


def test_abort_with_a_step_in_flight_frees_everything(tiny_llama):
    core = make_core(tiny_llama)
    for i in range(3):
        core.add_request(EngineRequest(f"r{i}", list(range(30 + i, 60)), SamplingParams(max_tokens=50, ignore_eos=True)))
    early = [out for _ in range(4) for out in core.step()]
    core.abort_requests(["r0", "r1"])
    tokens, reasons, _ = drive(core)
    assert set(reasons) == {"r2"} and set(tokens) == {"r2"}  # nothing more for the aborted ones
    assert sum(len(o.new_token_ids) for o in early if o.request_id == "r2") + len(tokens["r2"]) == 50
    assert core.kv_cache.usage() == 0.0 and not core.scheduler._draining


def test_start_up_warm_up_steps_leave_no_trace(tiny_llama):
    core = make_core(tiny_llama, enable_prefix_caching=False)  # warm-up writes junk into the first blocks
    prompt = list(range(40, 70))
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    core.add_request(EngineRequest("before", prompt, params))
    before, _, _ = drive(core)
    core.runner.warm_up()  # what a CUDA engine runs at start-up (before any request), through execute()
    assert not any(rid.startswith("warm-up") for rid in core.runner.states) and not core.runner._launched
    core.add_request(EngineRequest("after", prompt, params))
    after, _, _ = drive(core)
    assert after["after"] == before["before"]


def test_a_higher_priority_request_overtakes_a_running_one_which_then_resumes_unchanged(tiny_llama):
    core = make_core(tiny_llama, policy="priority", max_num_seqs=1, enable_prefix_caching=False)
    greedy = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    core.add_request(EngineRequest("alone", list(range(50, 80)), greedy, priority=5))
    alone, _, _ = drive(core)  # the reference: the same request, never set aside

    core.add_request(EngineRequest("low", list(range(50, 80)), greedy, priority=5))
    tokens: dict[str, list[int]] = {"low": [], "high": []}
    order, low_progress = [], None
    for i in range(200):
        if i == 5:
            core.add_request(EngineRequest("high", list(range(90, 110)), SamplingParams(max_tokens=4, ignore_eos=True),
                                           priority=0))
        for out in core.step():
            tokens[out.request_id].extend(out.new_token_ids)
            if out.finished:
                order.append(out.request_id)
                if out.request_id == "high":
                    low_progress = len(tokens["low"])
        if not core.has_unfinished_requests():
            break
    assert order == ["high", "low"] and core.scheduler.num_preemptions == 1
    assert 0 < low_progress < 24  # low had started, was set aside for high, and resumed after it
    assert tokens["low"] == alone["alone"]  # recomputed from its tokens: greedy output unchanged
    assert len(tokens["high"]) == 4 and core.kv_cache.usage() == 0.0


def test_head_size_the_backend_cannot_take_is_refused_before_loading(tmp_path):
    model_dir = build_model("qwen3", tmp_path / "h320", head_dim=320)
    config = EngineConfig.from_flat(model=str(model_dir), attention_backend="triton", kv_cache_gib=0.01)
    with pytest.raises(ConfigError, match=r"head sizes 1\.\.256, got 320 .*--attention-backend torch"):
        EngineCore(config)
    # the torch backend takes it
    EngineCore(EngineConfig.from_flat(model=str(model_dir), kv_cache_gib=0.01)).shutdown()
