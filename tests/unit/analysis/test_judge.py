"""The judge, check by check: hold without evidence, fail on sure regressions, pass on sure health."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fridaymorning.analysis.evidence import ArmSecond, Evidence, histogram_of
from fridaymorning.analysis.judge import fail_alpha, fails, judge, verdict_of
from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.stats import HISTOGRAM_SIZE, VALUES, index_of_value
from fridaymorning.analysis.verdict import Check, VerdictPhase
from fridaymorning.models import Window, new_sketch
from fridaymorning.testing import synthetic_window

PASS, FAIL, HOLD = VerdictPhase.PASS, VerdictPhase.FAIL, VerdictPhase.HOLD
POLICY = Policy(warmup_s=0, min_requests=100, max_error_rate=0.01, max_p99_ms=500, latency_tolerance=1.25)


def windows(
    version: str, seconds: int, per_second: int, failed: int = 0, latency_ms: float = 10.0
) -> list[Window]:
    return [synthetic_window("web", version, s, per_second, failed, latency_ms) for s in range(seconds)]


def check(name: str, checks: tuple[Check, ...]) -> Check:
    return next(c for c in checks if c.name == name)


def spread_second(requests: int, failed: int, latencies: np.ndarray) -> ArmSecond:
    """A second whose requests take the given latencies (cycled), binned as DDSketch bins them."""
    histogram = np.zeros(HISTOGRAM_SIZE)
    for position in range(requests):
        histogram[index_of_value(float(latencies[position % len(latencies)]))] += 1
    return ArmSecond(requests, failed, histogram)


def test_no_data_is_hold_never_pass() -> None:
    """With no windows at all the verdict is hold, and the evidence check says why."""
    verdict = judge([], [], POLICY)
    assert verdict.phase is HOLD
    assert "0 of 100 canary requests" in verdict.reason


def test_too_few_requests_is_hold() -> None:
    """A healthy canary with fewer requests than min_requests is held, not passed."""
    verdict = judge(windows("v2", 5, 10), windows("v1", 5, 90), POLICY)
    assert verdict.phase is HOLD


def test_healthy_canary_with_enough_requests_passes() -> None:
    """Same error rate and latency as the baseline, enough requests: pass."""
    verdict = judge(windows("v2", 10, 20), windows("v1", 10, 180), POLICY)
    assert verdict.phase is PASS, verdict.reason


def test_high_error_rate_fails_before_min_requests() -> None:
    """A canary failing 10% of 60 requests (baseline: none) is rolled back before min_requests."""
    verdict = judge(windows("v2", 3, 20, failed=2), windows("v1", 3, 180), POLICY)
    assert verdict.phase is FAIL
    assert check("error_rate_vs_baseline", verdict.checks).phase is FAIL


def test_slow_canary_fails_every_latency_comparison() -> None:
    """A canary 1.5x slower than the baseline at every request fails the p50, p90 and p99 comparisons."""
    verdict = judge(windows("v2", 10, 20, latency_ms=30), windows("v1", 10, 180, latency_ms=19), POLICY)
    assert verdict.phase is FAIL
    failed = {c.name for c in verdict.checks if c.phase is FAIL}
    assert failed == {"p50_vs_baseline", "p90_vs_baseline", "p99_vs_baseline"}


def test_p99_above_slo_holds_when_the_baseline_is_as_slow() -> None:
    """A canary whose p99 breaches the SLO is held, not failed, when the baseline breaches it as well."""
    verdict = judge(windows("v2", 10, 20, latency_ms=800), windows("v1", 10, 180, latency_ms=800), POLICY)
    assert verdict.phase is HOLD
    slo = check("p99_slo", verdict.checks)
    assert slo.phase is HOLD and "shared incident" in slo.detail


def test_p99_above_slo_fails_when_the_baseline_meets_it() -> None:
    """A canary whose p99 breaches the SLO while the baseline surely meets it is rolled back."""
    verdict = judge(windows("v2", 30, 20, latency_ms=800), windows("v1", 30, 180, latency_ms=20), POLICY)
    assert check("p99_slo", verdict.checks).phase is FAIL
    assert "p99_slo" in verdict.reason and "surely within it" in verdict.reason


def test_every_check_carries_its_evidence() -> None:
    """Each check reports statistic, bound, threshold and n; comparisons add e-value and its threshold."""
    verdict = judge(windows("v2", 10, 20), windows("v1", 10, 180), POLICY)
    as_dict = verdict.to_dict()
    names = {c["name"] for c in as_dict["checks"]}
    assert names == {
        "evidence",
        "error_rate_slo",
        "error_rate_vs_baseline",
        "p99_slo",
        "p50_vs_baseline",
        "p90_vs_baseline",
        "p99_vs_baseline",
    }
    evidence = next(c for c in as_dict["checks"] if c["name"] == "evidence")
    assert evidence["n"] == 200 and evidence["threshold"] == 100
    comparison = next(c for c in as_dict["checks"] if c["name"] == "error_rate_vs_baseline")
    assert comparison["evalue"] == 1.0 and comparison["evalue_threshold"] == pytest.approx(
        1 / fail_alpha(POLICY)
    )


def test_judge_equals_folding_seconds_into_evidence() -> None:
    """judge(windows) is verdict_of(the same seconds added one by one): the simulator's path."""
    rng = np.random.default_rng(3)
    canary: list[Window] = []
    baseline: list[Window] = []
    evidence = Evidence(POLICY)
    for second in range(30):
        arms = []
        for version, requests, rate in (("v2", 30, 0.05), ("v1", 270, 0.01)):
            window = Window(
                "web", version, second, requests=requests, failed=int(rng.binomial(requests, rate))
            )
            for value in rng.lognormal(3.5, 0.6, requests):
                window.tr.add(float(value))
            (canary if version == "v2" else baseline).append(window)
            arms.append(ArmSecond(window.requests, window.failed, histogram_of(window.tr)))
        evidence.add(arms[0], arms[1])
        assert verdict_of(evidence, POLICY) == judge(canary, baseline, POLICY)


@pytest.mark.parametrize("compare", [True, False])
def test_fails_is_the_verdicts_failing(compare: bool) -> None:
    """judge.fails(evidence) is exactly whether verdict_of(evidence) fails, second by second."""
    rng = np.random.default_rng(11)
    seen = set()
    for run in range(12):
        policy = Policy(
            min_requests=100, max_error_rate=0.02, max_p99_ms=float(rng.choice([60.0, 120.0, 1000.0]))
        )
        canary_rate, slow = float(rng.choice([0.0, 0.01, 0.04])), float(rng.choice([1.0, 1.3]))
        evidence = Evidence(policy)
        for _ in range(40):
            canary = spread_second(int(rng.integers(0, 40)), 0, rng.lognormal(math.log(30 * slow), 0.5, 50))
            canary = ArmSecond(
                canary.requests, int(rng.binomial(canary.requests, canary_rate)), canary.histogram
            )
            baseline = spread_second(int(rng.integers(1, 200)), 0, rng.lognormal(math.log(30), 0.5, 50))
            evidence.add(canary, baseline if run % 5 else ArmSecond(0, 0, None))
            failing = verdict_of(evidence, policy, compare=compare).phase is FAIL
            assert fails(evidence, policy, compare=compare) == failing
            seen.add(failing)
    assert seen == {True, False}


def test_histogram_matches_ddsketch() -> None:
    """The judge's histogram of a sketch gives DDSketch's own quantiles, including zero latencies."""
    sketch = new_sketch()
    for value in [0.0, 0.5, 3.0, 40.0, 41.0, 180.0, 5000.0]:
        sketch.add(value)
    histogram = histogram_of(sketch)
    assert histogram is not None and histogram.sum() == 7
    cumulative = np.cumsum(histogram)
    for q in (0.0, 0.3, 0.5, 0.9, 1.0):
        index = int(np.searchsorted(cumulative, q * 6, side="right"))
        assert VALUES[index] == pytest.approx(sketch.get_quantile_value(q) or 0.0)


# One table per check: the seconds fed to the judge, and the phase that check must give.
LOGNORMAL = np.random.default_rng(0).lognormal(math.log(40), 0.65, 5000)


@pytest.mark.parametrize(
    ("name", "canary", "baseline", "seconds", "policy", "expected"),
    [
        # evidence: only the canary's requests count
        ("evidence", (50, 0, 10.0), (450, 0, 10.0), 1, POLICY, HOLD),
        ("evidence", (50, 0, 10.0), (450, 0, 10.0), 2, POLICY, PASS),
        # error SLO: a bound min_requests can reach is required (500 x 1% ≥ ln 100) ...
        ("error_rate_slo", (100, 0, 10.0), (900, 0, 10.0), 6, Policy(warmup_s=0, min_requests=500), HOLD),
        ("error_rate_slo", (100, 0, 10.0), (900, 0, 10.0), 60, Policy(warmup_s=0, min_requests=1000), PASS),
        # ... one it cannot (100 x 1% < ln 100) falls back to the point estimate
        ("error_rate_slo", (100, 0, 10.0), (900, 0, 10.0), 1, POLICY, PASS),
        ("error_rate_slo", (100, 5, 10.0), (900, 0, 10.0), 10, POLICY, FAIL),
        ("error_rate_slo", (100, 2, 10.0), (900, 18, 10.0), 1, POLICY, HOLD),
        # error comparison: fails on the e-process, even when both are within the SLO
        ("error_rate_vs_baseline", (100, 1, 10.0), (900, 0, 10.0), 15, POLICY, FAIL),
        ("error_rate_vs_baseline", (100, 1, 10.0), (900, 9, 10.0), 5, POLICY, PASS),
        (
            "error_rate_vs_baseline",
            (100, 0, 10.0),
            (900, 1, 10.0),
            60,
            Policy(warmup_s=0, min_requests=1000),
            PASS,
        ),
        (
            "error_rate_vs_baseline",
            (100, 0, 10.0),
            (0, 0, 10.0),
            60,
            Policy(warmup_s=0, min_requests=1000),
            HOLD,
        ),
        # p99 SLO
        ("p99_slo", (100, 0, 600.0), (900, 0, 10.0), 10, POLICY, FAIL),
        ("p99_slo", (100, 0, 400.0), (900, 0, 10.0), 2, POLICY, PASS),
        (
            "p99_slo",
            (100, 0, 400.0),
            (900, 0, 10.0),
            2,
            Policy(warmup_s=0, min_requests=1000, max_p99_ms=500),
            HOLD,
        ),
        (
            "p99_slo",
            (100, 0, 400.0),
            (900, 0, 10.0),
            20,
            Policy(warmup_s=0, min_requests=1000, max_p99_ms=500),
            PASS,
        ),
        # latency comparisons
        ("p50_vs_baseline", (100, 0, 12.0), (900, 0, 10.0), 2, POLICY, FAIL),
        ("p50_vs_baseline", (100, 0, 10.0), (900, 0, 10.0), 2, POLICY, PASS),
        ("p50_vs_baseline", (100, 0, 9.0), (900, 0, 10.0), 2, POLICY, PASS),
        ("p99_vs_baseline", (100, 0, 10.0), (900, 0, 10.0), 2, Policy(warmup_s=0, min_requests=1000), HOLD),
        ("p99_vs_baseline", (100, 0, 10.0), (900, 0, 10.0), 30, Policy(warmup_s=0, min_requests=1000), PASS),
        (
            "p99_vs_baseline",
            (100, 0, LOGNORMAL),
            (900, 0, LOGNORMAL),
            5,
            Policy(warmup_s=0, min_requests=100),
            PASS,
        ),
        ("p99_vs_baseline", (100, 0, LOGNORMAL * 1.6), (900, 0, LOGNORMAL), 30, POLICY, FAIL),
    ],
)
def test_check_table(
    name: str,
    canary: tuple[int, int, object],
    baseline: tuple[int, int, object],
    seconds: int,
    policy: Policy,
    expected: VerdictPhase,
) -> None:
    """Each check gives the documented phase for the traffic in its row, repeated for `seconds` seconds."""
    evidence = Evidence(policy)
    for _ in range(seconds):
        evidence.add(*(spread_second(n, f, np.atleast_1d(np.asarray(ms))) for n, f, ms in (canary, baseline)))
    found = check(name, verdict_of(evidence, policy).checks)
    assert found.phase is expected, found.detail
