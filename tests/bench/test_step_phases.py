"""The step profile: each phase's host time, adding up to the step, timers gone afterwards."""

from __future__ import annotations

from kvserve.bench.step_phases import StepPhases
from kvserve.engine.scheduler import Scheduler
from kvserve.entrypoints.llm import LLM
from kvserve.sampling_params import SamplingParams


def test_phases_add_up_to_the_step_and_the_timers_come_off(tiny_llama):
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    schedule = Scheduler.schedule
    with LLM(str(tiny_llama), max_model_len=128, kv_cache_gib=0.01) as llm:
        expected = [o.outputs[0].token_ids for o in llm.generate(["Hello world"] * 4, params, use_tqdm=False)]
        phases = StepPhases()
        with phases.timing(llm.engine.core.runner.model):
            timed = [o.outputs[0].token_ids for o in llm.generate(["Hello world"] * 4, params, use_tqdm=False)]
        assert Scheduler.schedule is schedule and "forward" not in vars(llm.engine.core.runner.model)
    assert timed == expected  # timing changes nothing the engine computes
    ms = phases.per_step_ms()
    assert phases.steps >= 8
    for phase in ("schedule", "prepare inputs", "forward", "logits", "sample", "process outputs", "detokenize"):
        assert ms[phase] > 0, phase
    parts = sum(v for k, v in ms.items() if k not in ("step", "other") and not k.startswith("[bg]"))
    assert 0 <= ms["other"] < ms["step"] and abs(parts + ms["other"] - ms["step"]) < 1e-6
    assert ms["forward"] < ms["step"]
