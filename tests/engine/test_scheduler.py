import random

import pytest
from .factories import fake_run, make_request, make_scheduler, run_to_completion, step

from kvserve.engine.request import FinishReason
from kvserve.engine.scheduler import QueueFullError
from kvserve.engine.scheduler_output import ModelRunnerOutput


def test_prefill_then_decode_in_one_batch():
    s = make_scheduler(max_num_batched_tokens=100)
    s.add_request(make_request("a", prompt_len=10, max_tokens=3))
    out, _ = step(s)
    assert out.num_scheduled_tokens == {"a": 10}
    s.add_request(make_request("b", prompt_len=6, arrival=1.0))
    out, _ = step(s)
    assert out.num_scheduled_tokens == {"a": 1, "b": 6}  # decode and prefill share the step
    assert [r.req_id for r in out.scheduled_cached_reqs] == ["a"]
    assert [r.req_id for r in out.scheduled_new_reqs] == ["b"]


def test_long_prompt_is_prefilled_in_chunks_and_decodes_keep_running():
    s = make_scheduler(max_num_batched_tokens=8)
    s.add_request(make_request("short", prompt_len=3, max_tokens=10))
    step(s)
    s.add_request(make_request("long", prompt_len=20, arrival=1.0))
    chunks = []
    for _ in range(3):
        out, outputs = step(s)
        assert out.total_num_scheduled_tokens <= 8
        assert out.num_scheduled_tokens["short"] == 1  # running requests go first
        chunks.append(out.num_scheduled_tokens["long"])
        sampled = {o.request_id for o in outputs}
        assert ("long" in sampled) == (sum(chunks) == 20)  # samples only once the prompt is in
    assert chunks == [7, 7, 6]


def test_max_num_seqs_bounds_the_batch():
    s = make_scheduler(max_num_seqs=2)
    for i in range(3):
        s.add_request(make_request(f"r{i}", arrival=float(i)))
    out, _ = step(s)
    assert set(out.num_scheduled_tokens) == {"r0", "r1"}
    assert len(s.waiting) == 1


def test_finish_on_max_tokens_eos_and_stop_token():
    s = make_scheduler()
    s.add_request(make_request("len", max_tokens=2))
    s.add_request(make_request("stop", max_tokens=9, stop_token_ids=[7], arrival=1.0))
    done = run_to_completion(s)
    assert done["len"].finish_reason == FinishReason.LENGTH
    assert done["stop"].finish_reason == FinishReason.STOP and done["stop"].stop_reason == 7
    s.add_request(make_request("eos", max_tokens=9))
    out = s.schedule()
    [o] = s.update_from_output(ModelRunnerOutput({"eos": 1}))  # 1 is the request's EOS
    assert o.finish_reason == FinishReason.STOP and o.stop_reason is None


def test_min_tokens_delays_stop_tokens_and_ignore_eos():
    s = make_scheduler()
    s.add_request(make_request("m", max_tokens=9, min_tokens=3, stop_token_ids=[7]))
    s.add_request(make_request("i", max_tokens=4, ignore_eos=True, arrival=1.0))
    done, counts = {}, {"m": 0, "i": 0}
    while s.has_unfinished_requests():
        out = s.schedule()
        tokens = fake_run(out, s, token=7).sampled_token_ids
        tokens = {rid: (1 if rid == "i" else t) for rid, t in tokens.items()}  # "i" samples EOS
        for o in s.update_from_output(ModelRunnerOutput(tokens)):
            counts[o.request_id] += 1
            if o.finished:
                done[o.request_id] = o
    assert done["i"].finish_reason == FinishReason.LENGTH  # EOS ignored, ran to max_tokens
    assert done["m"].finish_reason == FinishReason.STOP
    assert counts == {"m": 4, "i": 4}  # "m" stops on the first stop token after min_tokens


def test_preemption_picks_latest_arrival_and_resumes():
    # 6 blocks of 4 tokens; each request needs 2 blocks for its prompt and grows
    s = make_scheduler(num_blocks=6, block_size=4, prefix=False)
    for i in range(3):
        s.add_request(make_request(f"r{i}", prompt_len=8, max_tokens=6, arrival=float(i)))
    out, _ = step(s)
    assert len(out.num_scheduled_tokens) == 3
    out, _ = step(s)  # every request needs a third block; only the latest is preempted
    assert s.num_preemptions == 1
    assert out.preempted_req_ids == {"r2"} and "r2" not in out.num_scheduled_tokens
    done = run_to_completion(s)
    assert set(done) == {"r0", "r1", "r2"}
    assert s.kv_cache.pool.num_free == 6


def test_priority_policy_orders_admission_and_victims():
    s = make_scheduler(max_num_seqs=1, policy="priority")
    s.add_request(make_request("low", priority=5, arrival=0.0))
    s.add_request(make_request("high", priority=-1, arrival=1.0))
    s.add_request(make_request("mid", priority=0, arrival=2.0))
    order = []
    while s.has_unfinished_requests():
        out, _ = step(s)
        for r in out.scheduled_new_reqs:
            order.append(r.req_id)
    assert order == ["high", "mid", "low"]


def test_priority_victim_is_lowest_priority():
    s = make_scheduler(num_blocks=6, block_size=4, prefix=False, policy="priority")
    s.add_request(make_request("batch", prompt_len=7, max_tokens=8, priority=9, arrival=0.0))
    s.add_request(make_request("normal", prompt_len=7, max_tokens=8, priority=1, arrival=1.0))
    step(s)  # a prefill step admits no lower prefill: they start one step after another
    step(s)
    assert {r.request_id for r in s.running} == {"batch", "normal"}
    s.add_request(make_request("vip", prompt_len=7, max_tokens=8, priority=0, arrival=5.0))
    out, _ = step(s)
    assert out.preempted_req_ids == {"batch"}


def test_abort_frees_blocks_at_once_and_unknown_ids_are_ignored():
    s = make_scheduler(num_blocks=10)
    s.add_request(make_request("a", prompt_len=10))
    s.add_request(make_request("w", prompt_len=10, arrival=1.0))
    step(s)
    assert s.kv_cache.pool.num_free < 10
    s.abort_requests(["a", "w", "nope"])
    assert s.kv_cache.pool.num_free == 10 and not s.has_unfinished_requests()
    assert s.schedule().finished_req_ids == {"a", "w"}


def test_waiting_queue_is_bounded():
    s = make_scheduler(max_waiting=2)
    s.add_request(make_request("a"))
    s.add_request(make_request("b"))
    with pytest.raises(QueueFullError):
        s.add_request(make_request("c"))
    s2 = make_scheduler()
    s2.add_request(make_request("x"))
    with pytest.raises(ValueError, match="already in use"):
        s2.add_request(make_request("x"))


def test_prefix_hits_skip_computed_blocks():
    s = make_scheduler(block_size=4)
    shared = list(range(100, 112))
    s.add_request(make_request("a", tokens=shared + [1, 2], max_tokens=2))
    run_to_completion(s)
    s.add_request(make_request("b", tokens=shared + [3], max_tokens=2))
    out, _ = step(s)
    assert out.scheduled_new_reqs[0].num_computed_tokens == 12
    assert out.num_scheduled_tokens["b"] == 1
    assert s.kv_cache.stats.hits == 12


def test_same_step_copies_share_prompt_blocks():
    s = make_scheduler(num_blocks=64, block_size=4)
    prompt = list(range(200, 217))  # 4 full blocks + 1 token
    for i in range(3):
        s.add_request(make_request(f"c{i}", tokens=prompt, arrival=float(i)))
    out, _ = step(s)
    assert [out.num_scheduled_tokens[f"c{i}"] for i in range(3)] == [17, 1, 1]
    assert s.kv_cache.pool.num_free == 64 - (5 + 1 + 1)


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_no_block_leaks_under_random_load(policy):
    rng = random.Random(0)
    s = make_scheduler(num_blocks=40, block_size=4, max_num_batched_tokens=32, max_num_seqs=8, policy=policy)
    ids = []
    for i in range(60):
        rid = f"r{i}"
        ids.append(rid)
        common = [5] * rng.choice([0, 4, 8])
        s.add_request(make_request(rid, tokens=common + [rng.randrange(10, 900) for _ in range(rng.randint(1, 30))],
                                   max_tokens=rng.randint(1, 20), arrival=float(i), priority=rng.randint(0, 3)))
        if rng.random() < 0.3:
            step(s)
        if rng.random() < 0.1:
            s.abort_requests([rng.choice(ids)])
    run_to_completion(s)
    assert s.kv_cache.pool.num_free == 40
    assert all(b.ref_cnt == 0 for b in s.kv_cache.pool.blocks)


# ---- scheduling one step ahead of the results (the engine's overlapped loop) ----


def sampled_by(out, s, token=7):
    """What the runner returns for a step whose every row reaches its end (all of these tests'
    steps: whole prompts and decodes)."""
    return ModelRunnerOutput({rid: token for rid in out.num_scheduled_tokens})


def test_next_step_is_scheduled_before_results_and_stops_at_max_tokens():
    s = make_scheduler()
    s.add_request(make_request("r", prompt_len=10, max_tokens=3))
    first = s.schedule()  # the prompt; its first token is then in flight
    assert first.num_scheduled_tokens == {"r": 10}
    second = s.schedule()  # decodes the in-flight token before its id is known
    assert second.num_scheduled_tokens == {"r": 1}
    assert s.requests["r"].num_inflight_tokens == 2
    assert s.update_from_output(sampled_by(first, s)) and s.requests["r"].num_output_tokens == 1
    third = s.schedule()
    assert third.num_scheduled_tokens == {"r": 1}  # the third and last token is now in flight
    s.update_from_output(sampled_by(second, s))
    assert s.schedule().is_empty  # max_tokens reached once the in-flight ids land: nothing to compute
    [o] = s.update_from_output(sampled_by(third, s))
    assert o.finish_reason == FinishReason.LENGTH and not s.has_unfinished_requests()
    assert s.kv_cache.pool.num_free == 64


def test_stop_token_costs_one_discarded_step_and_holds_the_id():
    s = make_scheduler()
    s.add_request(make_request("r", prompt_len=10, max_tokens=9))
    first = s.schedule()
    second = s.schedule()  # already scheduled when the first step's EOS arrives
    [o] = s.update_from_output(ModelRunnerOutput({"r": 1}))
    assert o.finish_reason == FinishReason.STOP and s.kv_cache.pool.num_free == 64
    with pytest.raises(ValueError, match="already in use"):  # its token of `second` is still in flight
        s.add_request(make_request("r"))
    assert s.update_from_output(sampled_by(second, s)) == []  # discarded
    s.add_request(make_request("r"))  # the id is free again
    assert first.num_scheduled_tokens == {"r": 10}
    assert s.schedule().num_scheduled_tokens == {"r": 2}  # the new "r" hits the old one's two full blocks


def test_preempted_request_keeps_its_in_flight_token():
    s = make_scheduler(num_blocks=6, block_size=4, prefix=False)
    for i in range(3):
        s.add_request(make_request(f"r{i}", prompt_len=8, max_tokens=6, arrival=float(i)))
    first = s.schedule()
    second = s.schedule()  # each needs a third block: r2 is preempted with its first token in flight
    assert second.preempted_req_ids == {"r2"}
    outputs = s.update_from_output(sampled_by(first, s))
    assert {o.request_id for o in outputs} == {"r0", "r1", "r2"}
    r2 = s.requests["r2"]
    assert r2.num_output_tokens == 1 and r2.num_inflight_tokens == 0 and r2.num_computed_tokens == 0
    s.update_from_output(sampled_by(second, s))
    done = run_to_completion(s)
    assert set(done) == {"r0", "r1", "r2"} and s.kv_cache.pool.num_free == 6


def test_higher_priority_arrival_preempts_a_running_lower_priority_request():
    s = make_scheduler(max_num_seqs=2, policy="priority")
    s.add_request(make_request("batch", max_tokens=20, priority=9, arrival=0.0))
    s.add_request(make_request("normal", max_tokens=20, priority=1, arrival=1.0))
    step(s)
    step(s)
    s.add_request(make_request("vip", max_tokens=3, priority=0, arrival=2.0))
    out, _ = step(s)  # no free slot: the lowest priority gives its place, the other keeps running
    assert out.preempted_req_ids == {"batch"}
    assert [r.req_id for r in out.scheduled_new_reqs] == ["vip"]
    assert "normal" not in out.num_scheduled_tokens  # its decode waits out vip's prefill step
    out, _ = step(s)
    assert out.num_scheduled_tokens == {"vip": 1, "normal": 1}
    done = run_to_completion(s)
    assert set(done) == {"batch", "normal", "vip"}
    assert len(done["batch"].new_token_ids) == 1 and s.requests == {}
    assert s.kv_cache.pool.num_free == s.kv_cache.num_blocks


def test_priority_preemption_frees_blocks_only_as_far_as_needed():
    # 8 blocks of 4 tokens; three low-priority requests hold 2 blocks each (room to decode in them), 2 are free
    s = make_scheduler(num_blocks=8, block_size=4, prefix=False, policy="priority")
    for i in range(3):
        s.add_request(make_request(f"low{i}", prompt_len=6, max_tokens=2, priority=5, arrival=float(i)))
    step(s)
    s.add_request(make_request("vip", prompt_len=12, max_tokens=2, priority=0, arrival=9.0))  # needs 3 blocks
    out, outputs = step(s)
    assert out.preempted_req_ids == {"low2"}  # the latest arrival of the lowest priority; one is enough
    assert [r.req_id for r in out.scheduled_new_reqs] == ["vip"]
    finished = {o.request_id for o in outputs if o.finished} | set(run_to_completion(s))
    assert finished == {"low0", "low1", "low2", "vip"}


def test_priority_preemption_leaves_room_for_the_running_requests_next_tokens():
    # as above, but each running request needs a third block for its next token
    s = make_scheduler(num_blocks=8, block_size=4, prefix=False, policy="priority")
    for i in range(3):
        s.add_request(make_request(f"low{i}", prompt_len=8, max_tokens=2, priority=5, arrival=float(i)))
    step(s)
    s.add_request(make_request("vip", prompt_len=12, max_tokens=2, priority=0, arrival=9.0))
    out, outputs = step(s)
    assert out.preempted_req_ids == {"low2", "low1"} and [r.req_id for r in out.scheduled_new_reqs] == ["vip"]
    assert "low0" not in out.num_scheduled_tokens  # it waits out vip's prefill step, still running
    out, later = step(s)
    assert out.num_scheduled_tokens["low0"] == 1  # in the block left for it
    finished = {o.request_id for o in outputs + later if o.finished} | set(run_to_completion(s))
    assert finished == {"low0", "low1", "low2", "vip"}


def test_no_preemption_for_equal_priority_or_under_fcfs():
    for policy, priority in (("priority", 5), ("fcfs", 0)):
        s = make_scheduler(max_num_seqs=1, policy=policy)
        s.add_request(make_request("first", max_tokens=4, priority=5, arrival=0.0))
        step(s)
        s.add_request(make_request("second", max_tokens=4, priority=priority, arrival=1.0))
        steps = [step(s)[0] for _ in range(3)]
        assert all(not o.preempted_req_ids and not o.scheduled_new_reqs for o in steps), policy


def test_priority_preemption_with_a_token_in_flight():
    s = make_scheduler(max_num_seqs=1, policy="priority")
    s.add_request(make_request("low", max_tokens=6, priority=5))
    first = s.schedule()  # low's prefill samples its first token
    s.add_request(make_request("high", max_tokens=2, priority=0, arrival=1.0))
    second = s.schedule()  # scheduled before the first step's id arrived
    assert second.preempted_req_ids == {"low"} and [r.req_id for r in second.scheduled_new_reqs] == ["high"]
    s.update_from_output(sampled_by(first, s))
    assert s.requests["low"].num_output_tokens == 1 and s.requests["low"].num_inflight_tokens == 0
    s.update_from_output(sampled_by(second, s))
    done = run_to_completion(s)
    assert len(done["low"].new_token_ids) == 1 and set(done) == {"low", "high"}
    assert s.kv_cache.pool.num_free == s.kv_cache.num_blocks
