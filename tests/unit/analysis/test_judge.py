"""The skeleton judge: hold without evidence, fail on clear regressions, pass on healthy canaries."""

from __future__ import annotations

from fridaymorning.analysis.judge import Policy, judge, wilson_bounds
from fridaymorning.analysis.verdict import VerdictPhase
from fridaymorning.testing import synthetic_window

POLICY = Policy(min_requests=100, max_error_rate=0.01, max_p99_ms=500, latency_tolerance=1.25)


def windows(version: str, seconds: int, per_second: int, failed: int = 0, latency_ms: float = 10.0) -> list:
    return [synthetic_window("web", version, s, per_second, failed, latency_ms) for s in range(seconds)]


def test_no_data_is_hold_never_pass() -> None:
    """With no windows at all the verdict is hold, and the evidence check says why."""
    verdict = judge([], [], POLICY)
    assert verdict.phase is VerdictPhase.HOLD
    assert "0 of 100 canary requests" in verdict.reason


def test_too_few_requests_is_hold() -> None:
    """A healthy canary with fewer requests than min_requests is held, not passed."""
    verdict = judge(windows("v2", 5, 10), windows("v1", 5, 90), POLICY)
    assert verdict.phase is VerdictPhase.HOLD


def test_healthy_canary_with_enough_requests_passes() -> None:
    """Same error rate and latency as the baseline, enough requests: pass."""
    verdict = judge(windows("v2", 10, 20), windows("v1", 10, 180), POLICY)
    assert verdict.phase is VerdictPhase.PASS, verdict.reason


def test_high_error_rate_fails_before_min_requests() -> None:
    """A canary failing 10% of 60 requests is rolled back without waiting for min_requests."""
    verdict = judge(windows("v2", 3, 20, failed=2), windows("v1", 3, 180), POLICY)
    assert verdict.phase is VerdictPhase.FAIL
    assert any(check.name == "error_rate_slo" and check.phase is VerdictPhase.FAIL for check in verdict.checks)


def test_slow_canary_fails_latency_comparison() -> None:
    """A canary 1.5× slower at p50 and p90 than the baseline fails the latency checks."""
    verdict = judge(windows("v2", 10, 20, latency_ms=30), windows("v1", 10, 180, latency_ms=19), POLICY)
    assert verdict.phase is VerdictPhase.FAIL
    failed = {check.name for check in verdict.checks if check.phase is VerdictPhase.FAIL}
    assert failed == {"p50_vs_baseline", "p90_vs_baseline"}


def test_p99_above_slo_fails() -> None:
    """A canary whose p99 exceeds the SLO fails even when the baseline is as slow."""
    verdict = judge(windows("v2", 10, 20, latency_ms=800), windows("v1", 10, 180, latency_ms=800), POLICY)
    assert verdict.phase is VerdictPhase.FAIL
    assert "p99_slo" in verdict.reason


def test_every_check_carries_its_evidence() -> None:
    """Each check reports statistic, bound, threshold and n, for `fm explain` and the API."""
    verdict = judge(windows("v2", 10, 20), windows("v1", 10, 180), POLICY)
    as_dict = verdict.to_dict()
    assert {check["name"] for check in as_dict["checks"]} >= {"evidence", "error_rate_slo", "p99_slo"}
    evidence = next(check for check in as_dict["checks"] if check["name"] == "evidence")
    assert evidence["n"] == 200 and evidence["threshold"] == 100


def test_wilson_bounds_contain_the_rate_and_widen_with_confidence() -> None:
    """The interval contains the observed rate and is wider at higher confidence."""
    low95, high95 = wilson_bounds(5, 100, 0.95)
    low99, high99 = wilson_bounds(5, 100, 0.99)
    assert low99 < low95 < 0.05 < high95 < high99
    assert wilson_bounds(0, 0, 0.99) == (0.0, 1.0)
