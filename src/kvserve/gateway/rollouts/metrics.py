"""Rollout metrics on the gateway's registry: each model's step, weights and phase, and
rollbacks by what was breached."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from kvserve.control.rollout import Phase
from kvserve.gateway.rollouts.record import Rollout


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.step = Gauge("kvserve:gateway_rollout_step", "Step of the model's rollout (1 = the first step)",
                          ["model"], registry=r)
        self.weight = Gauge("kvserve:gateway_rollout_weight", "Percent of the model's traffic each rollout version gets",
                            ["model", "version"], registry=r)
        self.state = Gauge("kvserve:gateway_rollout_state", "1 for the phase the model's rollout is in, else 0",
                           ["model", "state"], registry=r)
        self.rollbacks = Counter("kvserve:gateway_rollout_rollbacks",
                                 "Rollouts rolled back, by breach (error_rate, ttft_p95, tpot_p95; joined by '+') "
                                 "or 'aborted'", ["model", "reason"], registry=r)
        self.events = Counter("kvserve:gateway_rollout_events", "Rollout events (started, advanced, promoted, ...)",
                              ["model", "event"], registry=r)

    def show(self, rollout: Rollout) -> None:
        """Set the gauges to `rollout`'s current step, weights and phase."""
        model = rollout.model
        self.step.labels(model).set(rollout.state.step + 1)
        for version, weight in rollout.weights().items():
            self.weight.labels(model, version).set(weight)
        for phase in Phase:
            self.state.labels(model, phase.value).set(1 if rollout.state.phase is phase else 0)

    def event(self, model: str, event: str) -> None:
        self.events.labels(model, event).inc()

    def rolled_back(self, model: str, breaches: tuple[str, ...]) -> None:
        self.rollbacks.labels(model, "+".join(breaches) or "aborted").inc()
