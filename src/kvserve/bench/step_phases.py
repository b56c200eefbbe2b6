"""Where an engine step's host time goes, phase by phase (schedule, prepare inputs, forward,
masks, sample, process outputs, ...).

`StepPhases` wraps the functions named in a phase table with timers for the length of a
`with` block and puts them back after. A phase is charged its functions' own time, less
the time of other timed functions they call, so the phases of the main thread add up to
the step. Time spent on another thread (a mask job) is kept apart: it overlaps the step.
On a GPU the figures are host time: a launch costs its queueing, a wait for the device
shows up where the host blocks (`ids to host`, or an upload that synchronises). There the
device's own time of the phases in DEVICE_PHASES is measured too, with CUDA events around
each call, and reported with a `[gpu]` prefix (a call's whole time, nested calls included:
`[gpu] sample` contains `[gpu] apply mask`); it overlaps the host phases.
"""

from __future__ import annotations

import functools
import importlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import torch

STEP = "kvserve.engine.llm_engine:LLMEngine.step"
CORE_STEP = "kvserve.engine.engine_core:EngineCore.step"  # what `bench offline` drives: no detokenizer

# label -> "module:attribute" or "module:Class.method"; "model:NAME" is the runner's model instance
PHASES = {
    "schedule": ["kvserve.engine.scheduler:Scheduler.schedule"],
    "prepare inputs": ["kvserve.worker.model_runner:ModelRunner._settle",
                       "kvserve.worker.model_runner:ModelRunner._update_states",
                       "kvserve.worker.model_runner:ModelRunner._prepare_inputs"],
    "forward": ["model:forward", "kvserve.worker.cuda_graphs:DecodeGraphs.replay"],
    "logits": ["model:compute_logits"],
    "sampling batch": ["kvserve.worker.model_runner:build_sampling_batch"],
    "ids to host": ["kvserve.worker.step_handle:StepHandle.result",
                    "kvserve.worker.step_handle:StepHandle.host_token_ids"],
    "masks: advance matchers": ["kvserve.structured.guide:Guide.catch_up",
                                "kvserve.structured.guides:GuideTable._advance",
                                "llguidance.torch:consume_token_par"],
    "masks: fill": ["llguidance.torch:fill_next_token_bitmask_par"],
    "masks: wait for the job": ["kvserve.structured.guides:GuideTable.wait"],
    "masks: upload": ["kvserve.structured.guides:GuideTable._to_device"],
    "masks: rest": ["kvserve.worker.model_runner:ModelRunner._token_mask",
                    "kvserve.structured.guides:GuideTable.token_mask",
                    "kvserve.structured.guides:GuideTable.start_job",
                    "kvserve.structured.guides:GuideTable._fill"],
    "apply mask": ["kvserve.worker.sampler:apply_token_mask", "kvserve.worker.rejection_sampler:apply_token_mask"],
    "sample": ["kvserve.worker.sampler:Sampler.sample", "kvserve.worker.rejection_sampler:RejectionSampler.verify"],
    "launch": ["kvserve.worker.step_handle:StepHandle.__init__"],
    "process outputs": ["kvserve.engine.scheduler:Scheduler.update_from_output"],
    "detokenize": ["kvserve.engine.output_processor:OutputProcessor.process"],
}

# label -> targets as in PHASES, whose device time is measured as well (CUDA only)
DEVICE_PHASES = {
    "masks: upload": ["kvserve.structured.guides:GuideTable._to_device"],
    "apply mask": ["kvserve.worker.sampler:apply_token_mask", "kvserve.worker.rejection_sampler:apply_token_mask"],
    "sample": ["kvserve.worker.sampler:Sampler.sample", "kvserve.worker.rejection_sampler:RejectionSampler.verify"],
}


class StepPhases:
    """Per-phase host seconds over the steps run inside `with phases.timing(model):`."""

    def __init__(self, phases: dict[str, list[str]] | None = None, step: str = STEP,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.phases = PHASES if phases is None else phases
        self.step = step  # the function whose calls are the steps ("module:Class.method")
        self.clock = clock  # seconds; time.thread_time leaves out time other processes took
        self.seconds: dict[str, float] = defaultdict(float)
        self.steps = 0
        self._local = threading.local()
        self._main = threading.main_thread()
        self._events: list[tuple[str, object, object]] = []  # (label, start, end) CUDA events, read at the end

    def timing(self, model) -> "_Installed":
        return _Installed(self, model)

    def per_step_ms(self) -> dict[str, float]:
        """ms per step of each phase; `other` is the rest of the step on the main thread and
        phases timed on other threads carry a `[bg]` prefix."""
        self._read_events()
        steps = max(self.steps, 1)
        out = {label: 1e3 * s / steps for label, s in self.seconds.items() if label != "step"}
        main = sum(v for k, v in out.items() if not k.startswith(("[bg]", "[gpu]")))
        out["other"] = 1e3 * self.seconds["step"] / steps - main
        out["step"] = 1e3 * self.seconds["step"] / steps
        return out

    def wrap(self, label: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            stack = self._stack()
            stack.append(0.0)  # time of the timed calls inside this one
            begun = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = self.clock() - begun
                inner = stack.pop()
                self.seconds[self._label(label)] += elapsed - inner
                if stack:
                    stack[-1] += elapsed
        return timed

    def wrap_device(self, label: str, fn: Callable) -> Callable:
        """`fn` with CUDA events recorded on the current stream before and after each call."""
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                return fn(*args, **kwargs)
            finally:
                end.record()
                self._events.append((label, start, end))
        return timed

    def _read_events(self) -> None:
        """Add the recorded device time to `[gpu] LABEL` (waits for the device's work)."""
        if not self._events:
            return
        self._events[-1][2].synchronize()
        for label, start, end in self._events:
            self.seconds[f"[gpu] {label}"] += start.elapsed_time(end) / 1e3
        self._events.clear()

    def wrap_step(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            begun = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds["step"] += self.clock() - begun
                self.steps += 1
        return timed

    def _stack(self) -> list[float]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def _label(self, label: str) -> str:
        return label if threading.current_thread() is self._main else f"[bg] {label}"


class _Installed:
    """The timers in place, from __enter__ to __exit__."""

    def __init__(self, phases: StepPhases, model) -> None:
        self.phases, self.model = phases, model
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> StepPhases:
        owner, name = _resolve(self.phases.step)
        self._patch(owner, name, self.phases.wrap_step(getattr(owner, name)))
        for label, targets in self.phases.phases.items():
            for target in targets:
                owner, name = (self.model, target[6:]) if target.startswith("model:") else _resolve(target)
                self._patch(owner, name, self.phases.wrap(label, getattr(owner, name)))
        if _on_cuda(self.model):  # around the host timers: two event records cost next to nothing
            for label, targets in DEVICE_PHASES.items():
                for target in targets:
                    owner, name = _resolve(target)
                    self._patch(owner, name, self.phases.wrap_device(label, getattr(owner, name)))
        return self.phases

    def __exit__(self, *exc_info) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def _patch(self, owner, name: str, value) -> None:
        had_own = name in vars(owner)
        original = vars(owner).get(name)
        setattr(owner, name, value)
        self._undo.append(lambda: setattr(owner, name, original) if had_own else delattr(owner, name))


def _on_cuda(model) -> bool:
    parameter = next(model.parameters(), None)
    return parameter is not None and parameter.device.type == "cuda"


def _resolve(target: str):
    module_name, _, path = target.partition(":")
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name
