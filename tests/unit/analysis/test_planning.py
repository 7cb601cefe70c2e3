"""Evidence planning: how many canary requests each step needs, how long that takes, and when it warns."""

from __future__ import annotations

import math

import pytest

from fridaymorning.analysis.planning import Traffic, format_plan, plan_evidence
from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.stats import rate_upper_bound
from fridaymorning.controller.strategy import Step

STEPS = (Step(10, 30, 300, 1000), Step(25, 30, 300, 500), Step(50, 30, 300, 500))


def test_fast_traffic_fits_every_step_and_slow_traffic_warns() -> None:
    """At 1000 req/s every default step passes in time; at 100 req/s the first needs more than 300 s."""
    fast = plan_evidence(Traffic(1000), Policy(), STEPS)
    assert all(step.fits for step in fast.steps) and fast.warnings == []
    assert math.isfinite(fast.total_seconds)
    slow = plan_evidence(Traffic(100), Policy(), STEPS)
    assert not slow.steps[0].fits and slow.steps[0].seconds > 300
    assert len(slow.warnings) == 1
    assert "step 1" in slow.warnings[0] and slow.steps[0].binding.name in slow.warnings[0]


def test_requests_needed_do_not_depend_on_the_rate() -> None:
    """Without a warm-up, the first step needs about the same canary requests at 100 and 1000 req/s."""
    slow = plan_evidence(Traffic(100), Policy(warmup_s=0), STEPS).steps[0]
    fast = plan_evidence(Traffic(1000), Policy(warmup_s=0), STEPS).steps[0]
    assert slow.step_requests == pytest.approx(fast.step_requests, rel=0.02)
    assert slow.seconds == pytest.approx(10 * fast.seconds, rel=0.02)


def test_evidence_carries_over_to_later_steps() -> None:
    """Later steps start with the evidence of earlier ones: they wait only for their bake and own minimum."""
    plan = plan_evidence(Traffic(1000), Policy(), STEPS)
    later = plan.steps[1]
    assert later.binding.name in ("min_duration_s", "step min_requests")
    assert later.seconds == max(30, 500 / 250)
    assert later.total_requests == pytest.approx(plan.steps[0].total_requests + later.step_requests)


def test_binding_requirement_is_where_the_judges_bound_passes() -> None:
    """With only the error SLO to bound, the step ends at the first second the judge's upper bound passes."""
    policy = Policy(
        max_error_rate=0.005, error_rate_tolerance=0.5, quantiles=(0.5,), max_p99_ms=1e9, warmup_s=0
    )
    traffic = Traffic(rps=100, error_rate=0.0)
    step = plan_evidence(traffic, policy, [Step(100, 0, 3600, 1)], compare=False, z=0.0).steps[0]
    assert step.binding.name == "error_rate_slo"
    assert rate_upper_bound(0, 100 * step.seconds, policy.alpha) <= 0.005
    assert rate_upper_bound(0, 100 * (step.seconds - 1), policy.alpha) > 0.005


def test_latency_checks_wait_for_the_end_of_the_warm_up() -> None:
    """The warm-up's latencies are not judged: a latency-bound step passes warmup_s seconds later."""
    step = [Step(10, 0, 3600, 1)]
    cold = plan_evidence(Traffic(1000), Policy(warmup_s=0, latency_tolerance=1.25), step).steps[0]
    warm = plan_evidence(Traffic(1000), Policy(warmup_s=120, latency_tolerance=1.25), step).steps[0]
    assert cold.binding.name == warm.binding.name == "p99_vs_baseline"
    assert warm.seconds == pytest.approx(cold.seconds + 120, abs=1)
    by_name = {requirement.name: requirement.seconds for requirement in warm.requirements}
    assert by_name["evidence"] == pytest.approx(10, abs=1)  # requests and errors count from the start


def test_more_confidence_asks_for_more_requests() -> None:
    """Planning for an unlucky draw (z = 1.645) needs more requests than for the expected counts."""
    typical = plan_evidence(Traffic(1000), Policy(), STEPS, z=0.0).steps[0]
    unlucky = plan_evidence(Traffic(1000), Policy(), STEPS, z=1.645).steps[0]
    assert unlucky.step_requests > typical.step_requests


def test_a_looser_latency_tolerance_moves_the_binding_requirement() -> None:
    """p99 against the baseline binds the first step at a 1.25x tolerance; at 1.5x (default) it does not."""
    default = plan_evidence(Traffic(100), Policy(latency_tolerance=1.25), STEPS).steps[0]
    assert default.binding.name == "p99_vs_baseline"
    looser = plan_evidence(Traffic(100), Policy(), STEPS).steps[0]
    assert looser.binding.name != "p99_vs_baseline" and looser.seconds < default.seconds


def test_no_traffic_never_passes() -> None:
    """Without requests no step ever passes: the plan says never, and warns."""
    plan = plan_evidence(Traffic(0.0), Policy(), STEPS[:1])
    assert math.isinf(plan.steps[0].seconds) and math.isinf(plan.total_seconds)
    assert "never passes" in plan.warnings[0]
    assert any("never promoted" in line for line in format_plan(plan))


def test_fresh_baseline_needs_more_canary_requests() -> None:
    """A fresh baseline serves only as much as the canary, so its lower bounds are looser: more time."""
    shared = plan_evidence(Traffic(1000), Policy(), STEPS).steps[0]
    fresh = plan_evidence(Traffic(1000), Policy(), STEPS, fresh_baseline=True).steps[0]
    assert fresh.seconds > shared.seconds


def test_format_plan_lists_every_step() -> None:
    """The printed plan has a heading, one line per step with its binding requirement, and the total."""
    lines = format_plan(plan_evidence(Traffic(1000), Policy(), STEPS))
    assert lines[0].startswith("evidence plan at 1000 req/s")
    assert [line.split(":")[0].strip() for line in lines[1:4]] == ["step 1", "step 2", "step 3"]
    assert "binding: p99_vs_baseline" in lines[1]
    assert lines[4].strip().startswith("promoted after about")
