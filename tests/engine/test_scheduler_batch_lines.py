"""Low-priority work (batch lines) beside interactive requests under the priority policy:
it fills the room they leave, gives it back first, and never delays their admission."""

from tests.engine.factories import make_request, make_scheduler, step

BATCH = 2**62  # the priority the batch runner gives its lines


def test_an_arrival_is_admitted_before_a_batch_lines_prefill_takes_the_budget():
    s = make_scheduler(max_num_batched_tokens=16, policy="priority")
    s.add_request(make_request("line", prompt_len=40, max_tokens=4, priority=BATCH))
    out, _ = step(s)
    assert out.num_scheduled_tokens == {"line": 16}  # a chunk of its prompt; 24 tokens to go
    s.add_request(make_request("chat", prompt_len=10, max_tokens=4, arrival=1.0))
    out, _ = step(s)
    assert [r.req_id for r in out.scheduled_new_reqs] == ["chat"]
    assert out.num_scheduled_tokens == {"chat": 10}  # the line's prefill waits out chat's
    assert not out.preempted_req_ids
    out, _ = step(s)
    assert out.num_scheduled_tokens == {"chat": 1, "line": 15}  # then takes what chat leaves


def test_batch_lines_decode_beside_a_steady_interactive_load():
    # an interactive request arrives every third step and runs three: one always runs; the
    # lines' prompts are longer than a step's budget
    s = make_scheduler(num_blocks=96, max_num_seqs=5, max_num_batched_tokens=16, policy="priority")
    for i in range(4):
        s.add_request(make_request(f"line{i}", prompt_len=30, max_tokens=6, priority=BATCH, arrival=float(i)))
    finished, late = set(), []
    for t in range(60):
        if t % 3 == 0:
            s.add_request(make_request(f"chat{t}", prompt_len=8, max_tokens=3, arrival=10.0 + t))
        out, outputs = step(s)
        if t % 3 == 0 and list(out.num_scheduled_tokens) != [f"chat{t}"]:
            late.append(t)
        finished |= {o.request_id for o in outputs if o.finished}
    assert late == []  # each interactive request started at once, alone in its step
    assert {f"line{i}" for i in range(4)} <= finished  # and the job still made progress
