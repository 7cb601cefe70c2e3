"""The canary judge: windows of the canary and of the baseline in, a Verdict with its evidence out.

This is the skeleton judge: SLO thresholds on the canary alone, plus a plain canary-versus-baseline
comparison. Error rates use Wilson score bounds; latency compares sketch quantiles. It is given every
window since the rollout began. Too few canary requests is `hold`, never `pass`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from ddsketch import DDSketch

from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.verdict import Check, Verdict, VerdictPhase, combine
from fridaymorning.models import Window, new_sketch


@dataclass(frozen=True, slots=True)
class Totals:
    """Windows of one version summed: request and failure counts, and merged latency sketch."""

    requests: int
    failed: int
    latency: DDSketch

    @property
    def error_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0


def total(windows: Sequence[Window]) -> Totals:
    """Sum windows of one version."""
    latency = new_sketch()
    requests = failed = 0
    for window in windows:
        requests += window.requests
        failed += window.failed
        if window.tr.count:
            latency.merge(window.tr)
    return Totals(requests, failed, latency)


def wilson_bounds(failed: int, requests: int, confidence: float) -> tuple[float, float]:
    """Two-sided Wilson score interval of a proportion at `confidence`; (0, 1) with no data."""
    if requests == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    rate = failed / requests
    denominator = 1 + z * z / requests
    centre = (rate + z * z / (2 * requests)) / denominator
    spread = z * math.sqrt(rate * (1 - rate) / requests + z * z / (4 * requests * requests)) / denominator
    return max(0.0, centre - spread), min(1.0, centre + spread)


def quantile(sketch: DDSketch, q: float) -> float:
    """Quantile `q` of a sketch, NaN when it is empty."""
    value = sketch.get_quantile_value(q) if sketch.count else None
    return float("nan") if value is None else float(value)


def judge(canary: Sequence[Window], baseline: Sequence[Window], policy: Policy) -> Verdict:
    """Judge the canary's windows against the baseline's under `policy`."""
    canary_totals, baseline_totals = total(canary), total(baseline)
    checks = (
        evidence_check(canary_totals, policy),
        error_slo_check(canary_totals, policy),
        error_comparison_check(canary_totals, baseline_totals, policy),
        p99_slo_check(canary_totals, policy),
        *latency_comparison_checks(canary_totals, baseline_totals, policy),
    )
    return combine(checks)


def evidence_check(canary: Totals, policy: Policy) -> Check:
    """Hold until the canary has served at least `min_requests` in this step."""
    enough = canary.requests >= policy.min_requests
    return Check(
        name="evidence",
        phase=VerdictPhase.PASS if enough else VerdictPhase.HOLD,
        statistic=canary.requests,
        bound=canary.requests,
        threshold=policy.min_requests,
        n=canary.requests,
        detail=f"{canary.requests} of {policy.min_requests} canary requests",
    )


def error_slo_check(canary: Totals, policy: Policy) -> Check:
    """Fail when even the lower bound of the canary's error rate is above the SLO."""
    lower, _ = wilson_bounds(canary.failed, canary.requests, policy.confidence)
    if lower > policy.max_error_rate:
        phase = VerdictPhase.FAIL
    elif canary.requests >= policy.min_requests and canary.error_rate <= policy.max_error_rate:
        phase = VerdictPhase.PASS
    else:
        phase = VerdictPhase.HOLD
    return Check(
        name="error_rate_slo",
        phase=phase,
        statistic=canary.error_rate,
        bound=lower,
        threshold=policy.max_error_rate,
        n=canary.requests,
        detail=f"canary error rate {canary.error_rate:.2%} (lower bound {lower:.2%}), "
        f"SLO {policy.max_error_rate:.2%}",
    )


def error_comparison_check(canary: Totals, baseline: Totals, policy: Policy) -> Check:
    """Fail when the canary's error rate is surely above the baseline's plus the tolerance."""
    lower, _ = wilson_bounds(canary.failed, canary.requests, policy.confidence)
    _, baseline_upper = wilson_bounds(baseline.failed, baseline.requests, policy.confidence)
    allowed = baseline.error_rate + policy.error_rate_tolerance
    if baseline.requests and lower > baseline_upper + policy.error_rate_tolerance:
        phase = VerdictPhase.FAIL
    elif baseline.requests and canary.requests >= policy.min_requests and canary.error_rate <= allowed:
        phase = VerdictPhase.PASS
    else:
        phase = VerdictPhase.HOLD
    return Check(
        name="error_rate_vs_baseline",
        phase=phase,
        statistic=canary.error_rate - baseline.error_rate,
        bound=lower - baseline_upper,
        threshold=policy.error_rate_tolerance,
        n=canary.requests,
        detail=f"canary {canary.error_rate:.2%} vs baseline {baseline.error_rate:.2%} "
        f"(n={baseline.requests}), tolerance {policy.error_rate_tolerance:.2%}",
    )


def p99_slo_check(canary: Totals, policy: Policy) -> Check:
    """The canary's p99 server response time must stay under the SLO."""
    p99 = quantile(canary.latency, 0.99)
    if canary.requests < policy.min_requests or math.isnan(p99):
        phase = VerdictPhase.HOLD
    else:
        phase = VerdictPhase.PASS if p99 <= policy.max_p99_ms else VerdictPhase.FAIL
    return Check(
        name="p99_slo",
        phase=phase,
        statistic=p99,
        bound=p99,
        threshold=policy.max_p99_ms,
        n=int(canary.latency.count),
        detail=f"canary p99 {p99:.1f} ms, SLO {policy.max_p99_ms:.0f} ms",
    )


def latency_comparison_checks(canary: Totals, baseline: Totals, policy: Policy) -> tuple[Check, ...]:
    """Canary p50 and p90 must stay within `latency_tolerance` times the baseline's.

    p99 is left to the SLO: with a few hundred requests an empirical p99 is too noisy to compare.
    """
    return tuple(latency_ratio_check(canary, baseline, policy, q) for q in (0.5, 0.9))


def latency_ratio_check(canary: Totals, baseline: Totals, policy: Policy, q: float) -> Check:
    """Compare one latency quantile of the canary with the baseline's, as a ratio."""
    canary_value, baseline_value = quantile(canary.latency, q), quantile(baseline.latency, q)
    # One millisecond is HAProxy's timer resolution: below it a ratio means nothing.
    ratio = (canary_value + 1.0) / (baseline_value + 1.0)
    if canary.requests < policy.min_requests or baseline.requests < policy.min_requests or math.isnan(ratio):
        phase = VerdictPhase.HOLD
    else:
        phase = VerdictPhase.PASS if ratio <= policy.latency_tolerance else VerdictPhase.FAIL
    name = f"p{round(q * 100)}_vs_baseline"
    return Check(
        name=name,
        phase=phase,
        statistic=ratio,
        bound=ratio,
        threshold=policy.latency_tolerance,
        n=int(canary.latency.count),
        detail=f"canary {canary_value:.1f} ms vs baseline {baseline_value:.1f} ms "
        f"(ratio {ratio:.2f}, tolerance {policy.latency_tolerance:.2f})",
    )
