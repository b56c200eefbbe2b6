"""Rollout decisions on fake snapshots and a fake clock."""

from __future__ import annotations

import pytest

from kvserve.control.rollout import (
    Action, MetricsSnapshot, Phase, QualityWindow, RolloutError, RolloutPlan, RolloutState, Thresholds, VersionWindow,
    abort, apply, decide, pause, resume, start,
)

PLAN = RolloutPlan(steps=(5.0, 25.0, 50.0), bake_s=300.0,
                   thresholds=Thresholds(min_requests=100, min_latency_samples=50))
GOOD = dict(error_rate=0.01, ttft=0.200, tpot=0.020)


def window(requests: int, error_rate: float, ttft: float, tpot: float) -> VersionWindow:
    errors = round(requests * error_rate)
    has_latency = requests > errors
    return VersionWindow(requests, errors, ttft if has_latency else None, tpot if has_latency else None)


def run(candidate: dict, rate_b_per_s: float = 1.0, rate_a_per_s: float = 10.0, every_s: float = 30.0,
        until_s: float = 3600.0) -> list[tuple[float, object]]:
    """Drive a rollout as a gateway would: every `every_s` a snapshot of the window since
    the current step began (B's traffic grows with its share). Returns (time, decision)."""
    now, state, log = 0.0, start(0.0), []
    while now < until_s and state.phase is Phase.RUNNING:
        now += every_s
        share = PLAN.steps[state.step] / 100
        elapsed = now - state.step_started
        snap = MetricsSnapshot(
            baseline=window(int(elapsed * rate_a_per_s * (1 - share)), **GOOD),
            candidate=window(int(elapsed * rate_b_per_s * share * 20), **candidate),
            window_start=state.step_started, window_end=now)
        decision = decide(PLAN, state, snap, now)
        log.append((now, decision, snap))
        state = apply(state, decision, now)
    return log


def first_judgeable(log) -> float:
    t = PLAN.thresholds
    for now, _, snap in log:
        if min(snap.baseline.requests, snap.candidate.requests) >= t.min_requests:
            return now
    raise AssertionError("no window had enough samples")


def test_a_version_with_30_percent_errors_is_rolled_back_at_the_first_window_with_enough_samples():
    log = run(dict(error_rate=0.30, ttft=0.2, tpot=0.02))
    now, decision, _ = log[-1]
    assert decision.action is Action.ROLL_BACK and decision.candidate_percent == 0.0
    assert "error rate 30.0%" in decision.reason
    assert now == first_judgeable(log)
    assert all(d.action is Action.HOLD for _, d, _ in log[:-1])


def test_a_version_with_3x_ttft_is_rolled_back_at_the_first_window_with_enough_latency_samples():
    log = run(dict(error_rate=0.01, ttft=0.600, tpot=0.02))
    now, decision, snap = log[-1]
    assert decision.action is Action.ROLL_BACK and "TTFT p95 600 ms vs baseline 200 ms (3.00x" in decision.reason
    earlier = [s for _, _, s in log[:-1]]
    assert all(min(s.baseline.successes, s.candidate.successes) < 50 for s in earlier)
    assert min(snap.baseline.successes, snap.candidate.successes) >= 50


def test_a_version_failing_every_request_is_rolled_back_without_latency_samples():
    log = run(dict(error_rate=1.0, ttft=0.2, tpot=0.02))
    assert log[-1][1].action is Action.ROLL_BACK and "error rate 100.0%" in log[-1][1].reason


def test_a_good_version_advances_after_each_bake_and_is_promoted_after_the_last():
    log = run(dict(error_rate=0.015, ttft=0.21, tpot=0.021))
    moves = [(now, d.action, d.candidate_percent) for now, d, _ in log if d.action is not Action.HOLD]
    assert moves == [(300.0, Action.ADVANCE, 25.0), (600.0, Action.ADVANCE, 50.0), (900.0, Action.PROMOTE, 100.0)]


def test_too_few_samples_never_decide_however_bad_or_long():
    log = run(dict(error_rate=0.5, ttft=5.0, tpot=1.0), rate_b_per_s=0.01, until_s=7200)
    assert {d.action for _, d, _ in log} == {Action.HOLD}
    assert "too few samples" in log[-1][1].reason


def test_a_window_from_before_the_current_step_is_not_judged():
    state = start(0.0)
    bad = MetricsSnapshot(window(1000, 0.0, 0.2, 0.02), window(1000, 0.5, 0.2, 0.02),
                          window_start=-60.0, window_end=0.0)
    assert decide(PLAN, state, bad, 10.0).action is Action.HOLD


def test_latency_within_the_slack_is_not_a_breach():
    t = Thresholds(min_requests=10, min_latency_samples=10, latency_slack_s=0.005)
    plan = RolloutPlan(steps=(50.0,), bake_s=1.0, thresholds=t)
    snap = MetricsSnapshot(window(100, 0.0, 0.002, 0.001), window(100, 0.0, 0.006, 0.003), 0.0, 10.0)
    assert decide(plan, start(0.0), snap, 10.0).action is Action.PROMOTE


def test_a_finished_or_paused_rollout_holds_at_its_final_share():
    snap = MetricsSnapshot(window(1000, 0.0, 0.2, 0.02), window(1000, 0.0, 0.2, 0.02), 0.0, 10.0)
    rolled_back = RolloutState(step=1, step_started=0.0, phase=Phase.ROLLED_BACK, reason="x")
    assert decide(PLAN, rolled_back, snap, 1e6).candidate_percent == 0.0
    promoted = RolloutState(step=2, step_started=0.0, phase=Phase.PROMOTED)
    assert decide(PLAN, promoted, snap, 1e6).candidate_percent == 100.0
    paused = RolloutState(step=1, step_started=0.0, phase=Phase.PAUSED)
    assert decide(PLAN, paused, snap, 1e6).candidate_percent == 25.0


@pytest.mark.parametrize("steps", [(), (5.0, 100.0), (25.0, 5.0), (0.0, 50.0), (5.0, 5.0)])
def test_plans_that_cannot_work_are_refused(steps):
    with pytest.raises(RolloutError):
        RolloutPlan(steps=steps)


def test_a_paused_rollout_bakes_its_step_afresh_when_resumed():
    good = MetricsSnapshot(window(1000, 0.0, 0.2, 0.02), window(1000, 0.0, 0.2, 0.02), 0.0, 400.0)
    paused = pause(start(0.0), "investigating")
    assert decide(PLAN, paused, good, 400.0).action is Action.HOLD
    resumed = resume(paused, 500.0)
    assert decide(PLAN, resumed, good, 600.0).reason == "the window began before this step"
    fresh = MetricsSnapshot(good.baseline, good.candidate, 500.0, 700.0)
    assert decide(PLAN, resumed, fresh, 700.0).action is Action.HOLD  # 200 s of 300 baked
    assert decide(PLAN, resumed, fresh, 800.0).action is Action.ADVANCE
    with pytest.raises(RolloutError):
        resume(resumed, 900.0)


def test_a_roll_back_names_each_breach_for_metric_labels():
    t = Thresholds(min_requests=10, min_latency_samples=10)
    plan = RolloutPlan(steps=(50.0,), bake_s=1.0, thresholds=t)
    snap = MetricsSnapshot(window(100, 0.0, 0.2, 0.02), window(100, 0.3, 0.9, 0.02), 0.0, 10.0)
    decision = decide(plan, start(0.0), snap, 10.0)
    assert decision.action is Action.ROLL_BACK and decision.breaches == ("error_rate", "ttft_p95")
    slow_tokens = MetricsSnapshot(window(100, 0.0, 0.2, 0.02), window(100, 0.0, 0.2, 0.09), 0.0, 10.0)
    assert decide(plan, start(0.0), slow_tokens, 10.0).breaches == ("tpot_p95",)


def test_an_operator_aborts_a_running_or_paused_rollout_once():
    aborted = abort(pause(start(0.0), "look"), "bad answers")
    assert aborted.phase is Phase.ROLLED_BACK and aborted.reason == "bad answers"
    assert abort(start(0.0), "x").phase is Phase.ROLLED_BACK
    with pytest.raises(RolloutError):
        abort(aborted, "again")


QUALITY = Thresholds(min_requests=10, min_latency_samples=10, min_shadow_similarity=0.8, min_exact_match_rate=0.9,
                     min_feedback_score=0.6, min_similarity_samples=20, min_exact_match_samples=10,
                     min_feedback_samples=5)
QUALITY_PLAN = RolloutPlan(steps=(50.0,), bake_s=1.0, thresholds=QUALITY)


def judged(quality: QualityWindow):
    """The decision on a window whose errors and latencies are fine and baked, with `quality`."""
    snap = MetricsSnapshot(window(100, 0.0, 0.2, 0.02), window(100, 0.0, 0.2, 0.02), 0.0, 10.0, quality)
    return decide(QUALITY_PLAN, start(0.0), snap, 10.0)


ALIKE = QualityWindow(similarities=20, similarity_sum=19.0, greedy=10, exact=10, scores=5, score_sum=4.0)


def test_a_candidate_whose_answers_match_is_promoted_once_every_quality_figure_has_its_samples():
    assert judged(ALIKE).action is Action.PROMOTE
    short = judged(QualityWindow(similarities=19, similarity_sum=19.0, greedy=10, exact=10, scores=4, score_sum=4.0))
    assert short.action is Action.HOLD
    assert "19 shadow similarity samples of B (need 20)" in short.reason
    assert "4 mean feedback score samples of B (need 5)" in short.reason and "requests" not in short.reason


@pytest.mark.parametrize("worse, kind, words", [
    ({"similarity_sum": 12.0}, "shadow_similarity", "shadow similarity 0.600 over 20 samples (minimum 0.8)"),
    ({"exact": 5}, "exact_match", "greedy exact-match share 0.500 over 10 samples (minimum 0.9)"),
    ({"score_sum": 1.0}, "feedback_score", "mean feedback score 0.200 over 5 samples (minimum 0.6)"),
])
def test_a_quality_figure_below_its_minimum_rolls_back_and_names_the_criterion(worse, kind, words):
    decision = judged(QualityWindow(**{**ALIKE.__dict__, **worse}))
    assert decision.action is Action.ROLL_BACK and decision.breaches == (kind,) and decision.reason == words


def test_a_quality_breach_rolls_back_before_errors_and_latency_have_their_samples():
    snap = MetricsSnapshot(window(3, 0.0, 0.2, 0.02), window(3, 0.0, 0.2, 0.02), 0.0, 10.0,
                           QualityWindow(similarities=20, similarity_sum=2.0))
    decision = decide(QUALITY_PLAN, start(0.0), snap, 10.0)
    assert decision.action is Action.ROLL_BACK and decision.breaches == ("shadow_similarity",)


def test_quality_is_not_judged_unless_the_plan_sets_it():
    bad = QualityWindow(similarities=100, similarity_sum=0.0, greedy=100, exact=0, scores=100, score_sum=0.0)
    snap = MetricsSnapshot(window(100, 0.0, 0.2, 0.02), window(100, 0.0, 0.2, 0.02), 0.0, 10.0, bad)
    plan = RolloutPlan(steps=(50.0,), bake_s=1.0, thresholds=Thresholds(min_requests=10, min_latency_samples=10))
    assert decide(plan, start(0.0), snap, 10.0).action is Action.PROMOTE


def test_a_quality_window_subtracts_what_was_counted_before():
    before = QualityWindow(similarities=5, similarity_sum=1.0, greedy=4, exact=0, scores=2, score_sum=0.0)
    now = QualityWindow(similarities=15, similarity_sum=10.0, greedy=14, exact=10, scores=3, score_sum=1.0)
    since = now.since(before)
    assert (since.similarity_mean, since.exact_match_rate, since.score_mean) == (0.9, 1.0, 1.0)


@pytest.mark.parametrize("bad", [{"min_shadow_similarity": 1.5}, {"min_feedback_score": -0.1},
                                 {"min_exact_match_samples": 0}])
def test_quality_thresholds_that_cannot_work_are_refused(bad):
    with pytest.raises(RolloutError):
        Thresholds(**bad)
