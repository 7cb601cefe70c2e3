"""The canary judge: windows of the canary and of the baseline in, a Verdict with its evidence out.

Two questions per check, answered with anytime-valid statistics (docs/statistics.md):

- **fail**: is the canary surely worse? A sequential test per check, at alpha split evenly over the
  checks (Bonferroni), so a canary that is no worse than the baseline and meets the SLOs is rolled
  back with probability at most `alpha`, however often the controller looks. Comparisons with the
  baseline use the count e-process; SLOs use time-uniform lower bounds.
- **pass**: is the canary surely good enough? Upper confidence bounds (each at `alpha`) under the SLOs
  and tolerances, after at least `min_requests` canary requests. A bound that `min_requests` could
  never reach (Policy.gates) is replaced by its point estimate, and the check says so.

Neither: hold. Silence is never safety: without canary requests every check holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fridaymorning.analysis.evidence import Evidence, evidence_of
from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.stats import (
    LOWER_EDGES,
    UPPER_EDGES,
    VALUES,
    FloatArray,
    quantile_lower_rank,
    quantile_upper_rank,
    rate_lower_bound,
    rate_upper_bound,
)
from fridaymorning.analysis.verdict import Check, Verdict, VerdictPhase, combine
from fridaymorning.models import Window

PASS, FAIL, HOLD = VerdictPhase.PASS, VerdictPhase.FAIL, VerdictPhase.HOLD

# HAProxy measures Tr in whole milliseconds: latency ratios compare (a + 1) / (b + 1), so that 0 ms and
# 1 ms responses do not make a 2x regression.
TIMER_RESOLUTION_MS = 1.0


def judge(
    canary: Sequence[Window], baseline: Sequence[Window], policy: Policy, *, compare: bool = True
) -> Verdict:
    """Judge the canary's windows against the baseline's under `policy`.

    `canary` and `baseline` are every window since the rollout began; the result depends only on them.
    With `compare=False` (blue/green, where the old version serves nothing to compare with) only the
    evidence and the SLO checks count.
    """
    return verdict_of(evidence_of(canary, baseline, policy), policy, compare=compare)


def fail_alpha(policy: Policy) -> float:
    """The alpha of each failing test: the policy's alpha shared by the two SLOs and the comparisons."""
    return policy.alpha / (3 + len(policy.quantiles))


def verdict_of(evidence: Evidence, policy: Policy, *, compare: bool = True) -> Verdict:
    """The verdict on the evidence gathered so far."""
    canary_cumulative = evidence.canary_cumulative
    baseline_cumulative = evidence.baseline_cumulative
    slo_checks = (
        evidence_check(evidence, policy),
        error_slo_check(evidence, policy),
        p99_slo_check(evidence, policy, canary_cumulative),
    )
    if not compare:
        return combine(slo_checks)
    comparisons = (
        error_comparison_check(evidence, policy),
        *(
            latency_comparison_check(evidence, policy, position, canary_cumulative, baseline_cumulative)
            for position in range(len(policy.quantiles))
        ),
    )
    return combine((*slo_checks, *comparisons))


def fails(evidence: Evidence, policy: Policy, *, compare: bool = True) -> bool:
    """Whether verdict_of(evidence, policy, compare=compare) fails, from the failing side of each check.

    The same predicates decide each check's FAIL below; the pass bounds and the details are not computed,
    so this costs a fraction of the verdict. `fm simulate` asks it every simulated second to know whether
    it must build the verdict at all (analysis.simulate.run_fm).
    """
    if _error_slo_lower(evidence, policy) > policy.max_error_rate:
        return True
    if evidence.canary_latency_count > 0 and _p99_slo_lower(evidence, policy) > policy.max_p99_ms:
        return True
    if not compare:
        return False
    needed = 1.0 / fail_alpha(policy)
    if evidence.error_evalue >= needed:
        return True
    if evidence.canary_latency_count <= 0 or evidence.baseline_latency_count <= 0:
        return False
    return any(evidence.latency_evalue(position) >= needed for position in range(len(policy.quantiles)))


def _error_slo_lower(evidence: Evidence, policy: Policy) -> float:
    """The lower bound of the canary's error rate that fails error_rate_slo when above the SLO."""
    return rate_lower_bound(evidence.canary_failed, evidence.canary_requests, fail_alpha(policy))


def _p99_slo_lower(evidence: Evidence, policy: Policy) -> float:
    """The lower bound of the canary's p99 that fails p99_slo when above the SLO (canary latencies > 0)."""
    count = evidence.canary_latency_count
    rank = quantile_lower_rank(count, 0.99, fail_alpha(policy))
    return _order_statistic(evidence.canary_cumulative, rank, LOWER_EDGES)


def evidence_check(evidence: Evidence, policy: Policy) -> Check:
    """Hold until the canary has served at least `min_requests` since the rollout began."""
    served = evidence.canary_requests
    return Check(
        name="evidence",
        phase=PASS if served >= policy.min_requests else HOLD,
        statistic=served,
        bound=served,
        threshold=policy.min_requests,
        n=served,
        detail=f"{served} of {policy.min_requests} canary requests",
    )


def error_slo_check(evidence: Evidence, policy: Policy) -> Check:
    """Fail when the canary's error rate is surely above the SLO; pass when surely below it."""
    failed, served = evidence.canary_failed, evidence.canary_requests
    rate = failed / served if served else 0.0
    lower = _error_slo_lower(evidence, policy)
    limit = policy.max_error_rate
    if lower > limit:
        phase, bound = FAIL, lower
        detail = f"canary error rate {rate:.2%}, surely above the SLO {limit:.2%} (lower bound {lower:.2%})"
    elif policy.gates(limit):
        bound = rate_upper_bound(failed, served, policy.alpha)
        phase = PASS if served >= policy.min_requests and bound <= limit else HOLD
        detail = f"canary error rate {rate:.2%} (upper bound {bound:.2%}), SLO {limit:.2%}"
    else:
        bound = rate
        phase = PASS if served >= policy.min_requests and rate <= limit else HOLD
        detail = f"canary error rate {rate:.2%}, SLO {limit:.2%} ({_ungated(policy, limit)})"
    return Check("error_rate_slo", phase, rate, bound, limit, served, detail)


def error_comparison_check(evidence: Evidence, policy: Policy) -> Check:
    """Fail when the error e-process shows the canary fails more often than the baseline.

    Pass when the canary's upper bound minus the baseline's lower bound is within the tolerance.
    """
    canary_rate = evidence.canary_failed / evidence.canary_requests if evidence.canary_requests else 0.0
    baseline_rate = (
        evidence.baseline_failed / evidence.baseline_requests if evidence.baseline_requests else 0.0
    )
    evalue, needed = evidence.error_evalue, 1.0 / fail_alpha(policy)
    tolerance = policy.error_rate_tolerance
    rates = (
        f"canary {canary_rate:.2%} of n={evidence.canary_requests} "
        f"vs baseline {baseline_rate:.2%} of n={evidence.baseline_requests}"
    )
    compared = evidence.baseline_requests > 0 and evidence.canary_requests >= policy.min_requests
    if evalue >= needed:
        phase, bound = FAIL, math.nan
        detail = f"{rates}: the canary fails more often (e-value {evalue:.3g} ≥ {needed:.3g})"
    elif policy.gates(tolerance):
        upper = rate_upper_bound(evidence.canary_failed, evidence.canary_requests, policy.alpha / 2)
        lower = rate_lower_bound(evidence.baseline_failed, evidence.baseline_requests, policy.alpha / 2)
        bound = upper - lower
        phase = PASS if compared and bound <= tolerance else HOLD
        detail = f"{rates}, excess at most {bound:.2%} (tolerance {tolerance:.2%}; e-value {evalue:.3g})"
    else:
        bound = canary_rate - baseline_rate
        phase = PASS if compared and bound <= tolerance else HOLD
        detail = f"{rates}, tolerance {tolerance:.2%} ({_ungated(policy, tolerance)}; e-value {evalue:.3g})"
    return Check(
        "error_rate_vs_baseline",
        phase,
        canary_rate - baseline_rate,
        bound,
        tolerance,
        evidence.canary_requests,
        detail,
        evalue,
        needed,
    )


def p99_slo_check(evidence: Evidence, policy: Policy, canary_cumulative: FloatArray) -> Check:
    """Fail when the canary's p99 is surely above the SLO; pass when surely below it."""
    count, limit = evidence.canary_latency_count, policy.max_p99_ms
    if count <= 0:
        return Check(
            "p99_slo", HOLD, math.nan, math.nan, limit, 0, f"no canary latencies yet; SLO {limit:.0f} ms"
        )
    p99 = _quantile(canary_cumulative, count, 0.99)
    lower = _p99_slo_lower(evidence, policy)
    if lower > limit:
        phase, bound = FAIL, lower
        detail = f"canary p99 {p99:.1f} ms, surely above the SLO {limit:.0f} ms (lower bound {lower:.1f} ms)"
    elif policy.gates(0.01):
        bound = _order_statistic(
            canary_cumulative, quantile_upper_rank(count, 0.99, policy.alpha), UPPER_EDGES
        )
        phase = PASS if evidence.canary_requests >= policy.min_requests and bound <= limit else HOLD
        detail = f"canary p99 {p99:.1f} ms (upper bound {bound:.1f} ms), SLO {limit:.0f} ms"
    else:
        bound = p99
        phase = PASS if evidence.canary_requests >= policy.min_requests and p99 <= limit else HOLD
        detail = f"canary p99 {p99:.1f} ms, SLO {limit:.0f} ms ({_ungated(policy, 0.01)})"
    return Check("p99_slo", phase, p99, bound, limit, int(count), detail)


def latency_comparison_check(
    evidence: Evidence,
    policy: Policy,
    position: int,
    canary_cumulative: FloatArray,
    baseline_cumulative: FloatArray,
) -> Check:
    """Compare one latency quantile of the canary with the baseline's.

    Fail when the e-process shows canary requests are slower than the baseline's quantile more often
    than the baseline's own requests are. Pass when the ratio of the canary's upper bound to the
    baseline's lower bound (confidence sequences on the quantile) is within `latency_tolerance`.
    """
    q = float(evidence.quantiles[position])
    name = f"p{_percent(q)}_vs_baseline"
    tolerance = policy.latency_tolerance
    evalue, needed = evidence.latency_evalue(position), 1.0 / fail_alpha(policy)
    canary_count, baseline_count = evidence.canary_latency_count, evidence.baseline_latency_count
    if canary_count <= 0 or baseline_count <= 0:
        detail = f"no latencies yet (canary {canary_count:.0f}, baseline {baseline_count:.0f})"
        return Check(name, HOLD, math.nan, math.nan, tolerance, int(canary_count), detail, evalue, needed)
    canary_value = _quantile(canary_cumulative, canary_count, q)
    baseline_value = _quantile(baseline_cumulative, baseline_count, q)
    ratio = (canary_value + TIMER_RESOLUTION_MS) / (baseline_value + TIMER_RESOLUTION_MS)
    values = f"canary {canary_value:.1f} ms vs baseline {baseline_value:.1f} ms (ratio {ratio:.2f})"
    compared = evidence.canary_requests >= policy.min_requests
    if evalue >= needed:
        phase, bound = FAIL, math.nan
        detail = f"{values}: canary requests are slower (e-value {evalue:.3g} ≥ {needed:.3g})"
    elif policy.gates(1.0 - q):
        canary_rank = quantile_upper_rank(canary_count, q, policy.alpha / 2)
        baseline_rank = quantile_lower_rank(baseline_count, q, policy.alpha / 2)
        canary_upper = _order_statistic(canary_cumulative, canary_rank, UPPER_EDGES)
        baseline_lower = _order_statistic(baseline_cumulative, baseline_rank, LOWER_EDGES)
        bound = (canary_upper + TIMER_RESOLUTION_MS) / (baseline_lower + TIMER_RESOLUTION_MS)
        phase = PASS if compared and bound <= tolerance else HOLD
        detail = f"{values}, at most {bound:.2f} (tolerance {tolerance:.2f}; e-value {evalue:.3g})"
    else:
        bound = ratio
        phase = PASS if compared and ratio <= tolerance else HOLD
        detail = f"{values}, tolerance {tolerance:.2f} ({_ungated(policy, 1.0 - q)}; e-value {evalue:.3g})"
    return Check(name, phase, ratio, bound, tolerance, int(canary_count), detail, evalue, needed)


def _quantile(cumulative: FloatArray, count: float, q: float) -> float:
    """The q-quantile of a histogram, as DDSketch.get_quantile_value computes it."""
    index = int(cumulative.searchsorted(q * (count - 1.0), side="right"))
    return float(VALUES[min(index, len(VALUES) - 1)])


def _order_statistic(cumulative: FloatArray, rank: float, edges: FloatArray) -> float:
    """An edge of the bin holding the `rank`-th smallest value; 0 below rank 1, infinity past the last."""
    if rank < 1:
        return 0.0
    if rank > cumulative[-1]:
        return math.inf
    return float(edges[int(cumulative.searchsorted(rank, side="left"))])


def _percent(q: float) -> str:
    return f"{q * 100:g}".replace(".", "_")


def _ungated(policy: Policy, rate: float) -> str:
    needed = math.ceil(math.log(1.0 / policy.alpha) / rate)
    return f"point estimate: min_requests {policy.min_requests} < {needed} cannot bound it"
