"""Factory helpers for scheduler tests: requests and fake model-runner outputs."""

from kvserve.config import SchedulerConfig
from kvserve.engine.kv_cache_manager import KVCacheManager
from kvserve.engine.request import EngineRequest
from kvserve.engine.scheduler import Scheduler
from kvserve.engine.scheduler_output import ModelRunnerOutput, SchedulerOutput
from kvserve.sampling_params import SamplingParams


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make_scheduler(num_blocks=64, block_size=4, max_model_len=256, prefix=True, **sched) -> Scheduler:
    kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching=prefix)
    return Scheduler(SchedulerConfig(**sched), kv, max_model_len, clock=FakeClock())


def make_request(rid, prompt_len=10, max_tokens=5, priority=0, arrival=0.0, tokens=None, **params) -> EngineRequest:
    prompt = tokens if tokens is not None else [(hash(rid) + i) % 1000 + 10 for i in range(prompt_len)]
    return EngineRequest(rid, prompt, SamplingParams(max_tokens=max_tokens, **params), priority, arrival, eos_token_id=1)


def fake_run(sched_out: SchedulerOutput, scheduler: Scheduler, token=7) -> ModelRunnerOutput:
    """Sample `token` for every request whose scheduled tokens reach its end: with results
    applied after every step, those are the requests with a token in flight."""
    sampled = {}
    for rid in sched_out.num_scheduled_tokens:
        req = scheduler.requests.get(rid)
        if req is not None and req.num_inflight_tokens:
            sampled[rid] = token
    return ModelRunnerOutput(sampled)


def step(scheduler: Scheduler, token=7):
    out = scheduler.schedule()
    return out, scheduler.update_from_output(fake_run(out, scheduler, token))


def run_to_completion(scheduler: Scheduler, max_steps=10_000):
    finished = {}
    for _ in range(max_steps):
        if not scheduler.has_unfinished_requests():
            return finished
        _, outputs = step(scheduler)
        for o in outputs:
            if o.finished:
                finished[o.request_id] = o
    raise AssertionError("requests did not finish")
