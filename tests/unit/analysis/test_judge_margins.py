"""The judge on real services: margins on the failing side, SLOs that spare shared incidents, warm-up."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from fridaymorning.analysis.evidence import ArmSecond, Evidence, SloBlock, evidence_of, slower_index
from fridaymorning.analysis.judge import fail_alpha, fails, slo_alpha, verdict_of
from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.stats import HISTOGRAM_SIZE, THETA_GRID, UPPER_EDGES, index_of_value
from fridaymorning.analysis.verdict import Check, VerdictPhase
from fridaymorning.testing import synthetic_window

PASS, FAIL, HOLD = VerdictPhase.PASS, VerdictPhase.FAIL, VerdictPhase.HOLD


def second(requests: int, failed: int, latencies_ms: list[float]) -> ArmSecond:
    """A second whose requests take the given latencies (cycled), binned as DDSketch bins them."""
    histogram = np.zeros(HISTOGRAM_SIZE)
    for position in range(requests):
        histogram[index_of_value(latencies_ms[position % len(latencies_ms)])] += 1
    return ArmSecond(requests, failed, histogram)


def check(name: str, checks: tuple[Check, ...]) -> Check:
    return next(c for c in checks if c.name == name)


def feed(evidence: Evidence, seconds: int, canary: ArmSecond, baseline: ArmSecond) -> None:
    for _ in range(seconds):
        evidence.add(canary, baseline)


# --- errors: the ratio and the absolute margin ----------------------------------------------------------


@pytest.mark.parametrize(
    ("canary_requests", "baseline_requests", "baseline_rate", "ratio", "margin"),
    [
        (10, 90, 0.001, 1.0, 0.001),
        (100, 900, 0.0, 1.0, 0.002),
        (50, 50, 0.01, 1.5, 0.001),
        (5, 95, 0.2, 2.0, 0.0),
    ],
)
def test_error_factor_has_mean_at_most_one_at_the_margin(
    canary_requests: int, baseline_requests: int, baseline_rate: float, ratio: float, margin: float
) -> None:
    """At the null's edge (canary rate = ratio x baseline's + margin) each θ's factor has mean ≤ 1, exactly.

    The expectation is summed over the binomial distributions of both versions' errors, with the
    pseudo-errors and the ratio-weighted share that Evidence feeds the e-process.
    """
    canary_rate = ratio * baseline_rate + margin
    pseudo = baseline_requests * margin / ratio
    share = ratio * canary_requests / (ratio * canary_requests + baseline_requests)
    canary_errors = np.arange(canary_requests + 1)
    baseline_errors = np.arange(baseline_requests + 1)
    canary_pmf = binom.pmf(canary_errors, canary_requests, canary_rate)
    baseline_pmf = binom.pmf(baseline_errors, baseline_requests, baseline_rate)
    for theta in THETA_GRID:
        a = 1.0 + share * (theta - 1.0)
        canary_part = float(np.sum(canary_pmf * (theta / a) ** canary_errors))
        baseline_part = float(np.sum(baseline_pmf * a ** (-baseline_errors.astype(float))))
        assert canary_part * baseline_part * a**-pseudo <= 1.0 + 1e-9


def test_errors_within_the_margin_never_fail() -> None:
    """A canary failing 0.05% of requests against a flawless baseline is not rolled back (margin 0.1%)."""
    policy = Policy(warmup_s=0)
    evidence = Evidence(policy)
    rng = np.random.default_rng(5)
    for _ in range(600):
        evidence.add(ArmSecond(100, int(rng.binomial(100, 0.0005))), ArmSecond(900, 0))
        assert not fails(evidence, policy)


def test_errors_beyond_the_margin_fail_with_the_margin_in_the_reason() -> None:
    """A canary failing 1% of requests against a flawless baseline fails, and the reason names the margin."""
    policy = Policy(warmup_s=0)
    evidence = Evidence(policy)
    feed(evidence, 30, ArmSecond(100, 1), ArmSecond(900, 0))
    verdict = verdict_of(evidence, policy)
    comparison = check("error_rate_vs_baseline", verdict.checks)
    assert comparison.phase is FAIL
    assert "the baseline's rate + 0.10%" in comparison.detail


# --- latency: ratio and floor, HAProxy's whole milliseconds --------------------------------------------


def test_slower_index_is_beyond_the_margin() -> None:
    """Every bin above slower_index(ratio, floor)[c] holds only values above ratio x c + floor."""
    for ratio, floor in ((1.0, 1.0), (1.2, 1.0), (1.0, 5.0)):
        indexes = slower_index(ratio, floor)
        for threshold in range(0, HISTOGRAM_SIZE - 1, 7):
            limit = ratio * UPPER_EDGES[threshold] + floor
            above = indexes[threshold]
            assert above == HISTOGRAM_SIZE - 1 or UPPER_EDGES[above] >= limit


def test_one_millisecond_instead_of_zero_is_not_slower() -> None:
    """With Tr in whole ms, a canary taking 1 ms where the baseline takes 0 ms is never rolled back."""
    policy = Policy(warmup_s=0)
    evidence = Evidence(policy)
    for _ in range(300):
        evidence.add(second(100, 0, [1.0]), second(900, 0, [0.0, 0.0, 0.0, 1.0]))
        assert not fails(evidence, policy)


def test_sure_slowdown_beyond_the_floor_fails_with_exceedance_shares() -> None:
    """A canary at 3 ms against a 0-1 ms baseline fails; the reason gives the shares and the margin."""
    policy = Policy(warmup_s=0)
    evidence = Evidence(policy)
    feed(evidence, 10, second(100, 0, [3.0]), second(900, 0, [0.0, 0.0, 0.0, 1.0]))
    verdict = verdict_of(evidence, policy)
    assert verdict.phase is FAIL
    p50 = check("p50_vs_baseline", verdict.checks)
    assert p50.phase is FAIL
    assert "100.00% of canary requests above" in p50.detail
    assert "1 × the baseline's p50 + 1 ms" in p50.detail
    assert "0.0 ms vs baseline 0.0 ms: " not in p50.detail


@pytest.mark.parametrize(("offset_ms", "passes"), [(1.0, False), (5.0, True)])
def test_a_millisecond_more_at_one_millisecond_passes_with_the_offset(offset_ms: float, passes: bool) -> None:
    """A canary at 2 ms beside a baseline at 1 ms passes p50 with the default offset, and not with 1 ms.

    (2 + 1) / (1 + 1) = 1.5 is at the tolerance with no room for the bound's bin edge, so the old
    pass statistic held such a canary until its step timed out.
    """
    policy = Policy(warmup_s=0, latency_offset_ms=offset_ms)
    evidence = Evidence(policy)
    feed(evidence, 60, second(100, 0, [2.0]), second(900, 0, [1.0]))
    p50 = check("p50_vs_baseline", verdict_of(evidence, policy).checks)
    assert p50.phase is (PASS if passes else HOLD)


def test_the_offset_does_not_pass_a_slower_canary_at_tens_of_milliseconds() -> None:
    """At 100 ms, a canary at 160 ms is beyond 1.5 x (baseline + 5 ms) - 5 ms = 152.5 ms: no pass."""
    policy = Policy(warmup_s=0, latency_fail_ratio=2.0)
    evidence = Evidence(policy)
    feed(evidence, 60, second(100, 0, [160.0]), second(900, 0, [100.0]))
    p50 = check("p50_vs_baseline", verdict_of(evidence, policy).checks)
    assert p50.phase is HOLD
    assert p50.bound > policy.latency_tolerance


# --- warm-up --------------------------------------------------------------------------------------------


def test_cold_start_is_not_judged_on_latency() -> None:
    """A canary 3x slower for its first 30 s, then identical, is never rolled back; the hold says why."""
    policy = Policy()
    rng = np.random.default_rng(2)
    evidence = Evidence(policy)
    for index in range(120):
        factor = 3.0 if index < 30 else 1.0
        evidence.add(
            second(100, 0, list(rng.lognormal(math.log(40 * factor), 0.6, 100))),
            second(900, 0, list(rng.lognormal(math.log(40), 0.6, 300))),
        )
        assert not fails(evidence, policy)
        if index == 10:
            assert "warming up" in check("p50_vs_baseline", verdict_of(evidence, policy).checks).detail
    assert evidence.warm_from == 31


def test_a_healthy_canary_ends_its_warm_up_early() -> None:
    """A canary whose median matches the baseline's is judged on latency after 3 seconds, not 30."""
    policy = Policy()
    evidence = Evidence(policy)
    feed(evidence, 5, second(100, 0, [40.0, 50.0]), second(900, 0, [40.0, 50.0]))
    assert evidence.warm_from == 4
    assert evidence.canary_latency_count == 200


def test_errors_count_during_the_warm_up() -> None:
    """A canary failing 10% of its requests is rolled back while its latencies are still warming up."""
    policy = Policy()
    evidence = Evidence(policy)
    feed(evidence, 5, second(100, 10, [120.0]), second(900, 0, [40.0]))
    assert evidence.warming_up
    assert check("error_rate_vs_baseline", verdict_of(evidence, policy).checks).phase is FAIL


def test_a_canary_slow_for_good_is_judged_after_the_warm_up() -> None:
    """A canary 3x slower for good is rolled back on latency once warmup_s has passed."""
    policy = Policy(warmup_s=10)
    evidence = Evidence(policy)
    feed(evidence, 10, second(100, 0, [120.0]), second(900, 0, [40.0]))
    assert not fails(evidence, policy)
    feed(evidence, 5, second(100, 0, [120.0]), second(900, 0, [40.0]))
    assert check("p50_vs_baseline", verdict_of(evidence, policy).checks).phase is FAIL


# --- SLOs: sliding windows, shared incidents --------------------------------------------------------------


def test_slo_alphas_sum_to_the_tests_share() -> None:
    """Both bounds of every SLO window a rollout can open spend at most fail_alpha together."""
    policy = Policy()
    spent = sum(2 * slo_alpha(policy, SloBlock(k, start=0)) for k in range(1, 100_000))
    assert spent <= fail_alpha(policy)
    assert spent == pytest.approx(fail_alpha(policy), rel=1e-4)


def test_shared_incident_holds_and_says_so() -> None:
    """Both versions failing 30% of requests: the error SLO holds as a shared incident, nothing fails."""
    policy = Policy(warmup_s=0)
    evidence = Evidence(policy)
    feed(evidence, 60, second(100, 0, [40.0]), second(900, 1, [40.0]))
    for _ in range(20):
        evidence.add(second(100, 30, [120.0]), second(900, 270, [120.0]))
        assert not fails(evidence, policy)
    slo = check("error_rate_slo", verdict_of(evidence, policy).checks)
    assert slo.phase is HOLD
    assert "shared incident" in slo.detail


def test_the_canarys_own_breach_fails() -> None:
    """The canary failing 30% while the baseline is healthy over the same seconds: the SLO fails."""
    policy = Policy(warmup_s=0, error_fail_margin=0.5)  # leave the comparison out of it
    evidence = Evidence(policy)
    feed(evidence, 20, second(100, 30, [40.0]), second(900, 1, [40.0]))
    slo = check("error_rate_slo", verdict_of(evidence, policy).checks)
    assert slo.phase is FAIL
    assert "surely within it" in slo.detail


def test_an_incident_ages_out_of_the_slo() -> None:
    """After a shared incident the SLO window slides past it, and the SLO check passes again."""
    policy = Policy(warmup_s=0, slo_window_s=60)
    evidence = Evidence(policy)
    feed(evidence, 20, second(100, 30, [40.0]), second(900, 270, [40.0]))
    feed(evidence, 100, second(100, 0, [40.0]), second(900, 1, [40.0]))
    assert check("error_rate_slo", verdict_of(evidence, policy).checks).phase is PASS


def test_blue_green_slo_breach_fails_without_a_baseline() -> None:
    """Without a comparison (blue/green) the canary's own breach of the SLO fails."""
    policy = Policy(warmup_s=0)
    evidence = Evidence(policy)
    feed(evidence, 20, second(100, 30, [40.0]), ArmSecond(0, 0))
    assert fails(evidence, policy, compare=False)
    assert verdict_of(evidence, policy, compare=False).phase is FAIL


def test_stored_windows_count_missing_seconds_as_time() -> None:
    """evidence_of folds a second without any window in as empty, so warm-up and windows count time."""
    policy = Policy()
    canary = [synthetic_window("web", "v2", s, 10, 0, 40.0) for s in (100, 101, 140)]
    baseline = [synthetic_window("web", "v1", s, 90, 0, 40.0) for s in (100, 101, 140)]
    assert evidence_of(canary, baseline, policy).seconds == 41
