"""The canary judge: windows of the canary and of the baseline in, a Verdict with its evidence out.

Two questions per check, answered with anytime-valid statistics (docs/statistics.md):

- **fail**: is the canary surely worse, by a margin that matters? A sequential test per check, at
  alpha split evenly over the checks (Bonferroni), so a canary that is within the margins of the
  baseline and meets the SLOs wherever the baseline does is rolled back with probability at most
  `alpha`, however often the controller looks. Comparisons with the baseline use the count e-process
  against the policy's margins; an SLO fails over its sliding window only where the canary surely
  breaches it and the baseline surely does not (both breaching: hold, a shared incident).
- **pass**: is the canary surely good enough? Upper confidence bounds (each at `alpha`) under the SLOs
  and tolerances, after at least `min_requests` canary requests. A bound that `min_requests` could
  never reach (Policy.gates) is replaced by its point estimate, and the check says so.

Neither: hold. Silence is never safety: without canary requests every check holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fridaymorning.analysis.evidence import Evidence, SloBlock, evidence_of
from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.stats import (
    LOWER_EDGES,
    UPPER_EDGES,
    VALUES,
    BoolArray,
    FloatArray,
    IntArray,
    quantile_lower_rank,
    quantile_upper_rank,
    quantile_upper_ranks_may_reach,
    rate_bound_brackets,
    rate_lower_bound,
    rate_lower_bounds_may_be_above,
    rate_upper_bound,
    rate_upper_bounds_may_be_below,
)
from fridaymorning.analysis.verdict import Check, Verdict, VerdictPhase, combine
from fridaymorning.models import Window

PASS, FAIL, HOLD = VerdictPhase.PASS, VerdictPhase.FAIL, VerdictPhase.HOLD


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
        error_slo_check(evidence, policy, compare=compare),
        p99_slo_check(evidence, policy, canary_cumulative, compare=compare),
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
    it must build the verdict at all (simulation.simulate.run_fm).
    """
    breach = error_slo_breach(evidence, policy, compare=compare)
    if breach is not None and breach.canary_only:
        return True
    breach = p99_slo_breach(evidence, policy, compare=compare)
    if breach is not None and breach.canary_only:
        return True
    if not compare:
        return False
    needed = 1.0 / fail_alpha(policy)
    if evidence.error_evalue >= needed:
        return True
    if evidence.canary_latency_count <= 0 or evidence.baseline_latency_count <= 0:
        return False
    return any(evidence.latency_evalue(position) >= needed for position in range(len(policy.quantiles)))


@dataclass(frozen=True, slots=True)
class SloBreach:
    """An SLO window in which the canary surely breaches the SLO, and how the baseline fared there.

    `canary_only`: the baseline surely meets the SLO over the same seconds (or served nothing there to
    compare, or nothing is compared at all), so the breach is the canary's: fail. Otherwise the baseline
    may breach it too, a shared incident: hold.
    """

    block: SloBlock
    canary_bound: float  # the canary's lower bound, above the SLO
    baseline_bound: float  # the baseline's upper bound over the same seconds (NaN: not compared)
    baseline_value: float  # the baseline's point estimate over the same seconds (NaN: not compared)
    canary_only: bool


def slo_alpha(policy: Policy, block: SloBlock) -> float:
    """The alpha of each bound of an SLO's failing side in one window: fail_alpha / (2k (k + 1)) for the
    k-th block (the canary's lower bound and the baseline's upper bound each).

    Summed over both bounds and every block a rollout can open, this is fail_alpha (docs/statistics.md,
    "SLOs that do not blame the canary for shared incidents").
    """
    return fail_alpha(policy) / (2 * block.index * (block.index + 1))


def error_slo_breach(evidence: Evidence, policy: Policy, *, compare: bool = True) -> SloBreach | None:
    """An SLO window in which the canary's error rate surely breaches max_error_rate; None without one.

    A breach that is the canary's alone comes first; a shared one is returned only without such a breach.
    """
    limit, shared = policy.max_error_rate, None
    for block in evidence.slo_blocks:
        alpha = slo_alpha(policy, block)
        lower = rate_lower_bound(block.canary_failed, block.canary_requests, alpha)
        if lower <= limit:
            continue
        if not compare or block.baseline_requests <= 0:
            return SloBreach(block, lower, math.nan, math.nan, True)
        upper = rate_upper_bound(block.baseline_failed, block.baseline_requests, alpha)
        value = block.baseline_failed / block.baseline_requests
        breach = SloBreach(block, lower, upper, value, upper <= limit)
        if breach.canary_only:
            return breach
        shared = shared or breach
    return shared


def p99_slo_breach(evidence: Evidence, policy: Policy, *, compare: bool = True) -> SloBreach | None:
    """As error_slo_breach, for the p99 of the judged latencies and max_p99_ms."""
    limit, shared = policy.max_p99_ms, None
    for block in evidence.slo_blocks:
        count = float(block.canary_cumulative[-1])
        if count <= 0:
            continue
        alpha = slo_alpha(policy, block)
        lower = _order_statistic(
            block.canary_cumulative, quantile_lower_rank(count, 0.99, alpha), LOWER_EDGES
        )
        if lower <= limit:
            continue
        baseline_count = float(block.baseline_cumulative[-1])
        if not compare or baseline_count <= 0:
            return SloBreach(block, lower, math.nan, math.nan, True)
        rank = quantile_upper_rank(baseline_count, 0.99, alpha)
        upper = _order_statistic(block.baseline_cumulative, rank, UPPER_EDGES)
        value = _quantile(block.baseline_cumulative, baseline_count, 0.99)
        breach = SloBreach(block, lower, upper, value, upper <= limit)
        if breach.canary_only:
            return breach
        shared = shared or breach
    return shared


def _seconds_of(evidence: Evidence, block: SloBlock) -> str:
    """The seconds an SLO window covers, in words."""
    return f"over the last {evidence.seconds - block.start + 1} s"


def _pass_alphas(evidence: Evidence, policy: Policy) -> FloatArray:
    """The alpha each SLO block's pass bound spends, alpha/(k(k + 1)) for block k (row k - 1).

    Summed over the blocks this is alpha, besides the bound since the rollout began.
    """
    indexes = evidence.suffixes().indexes
    alphas: FloatArray = policy.alpha / (indexes * (indexes + 1)).astype(np.float64)
    return alphas


def _smallest(
    whole: float,
    rows: IntArray,
    may_be_below: Callable[[IntArray, float], BoolArray],
    bound: Callable[[int], float],
) -> float:
    """The smallest of `whole` and bound(row) over `rows`, computing only the bounds that may be smaller.

    `may_be_below(rows, best)` is False for the rows whose bound is surely not below `best`; the rows
    left are screened again each time the smallest comes down.
    """
    best, screened_at = whole, math.nan
    candidates = rows
    while candidates.size:
        if best != screened_at:
            candidates = candidates[may_be_below(candidates, best)]
            screened_at = best
            if not candidates.size:
                break
        row, candidates = int(candidates[0]), candidates[1:]
        best = min(best, bound(row))
    return best


def smallest_error_rate_bound(evidence: Evidence, policy: Policy, whole: float) -> float:
    """The smallest of `whole` and the canary's error-rate upper bounds since each SLO block's start.

    A block whose bound is surely not below the smallest so far (stats.rate_upper_bounds_may_be_below)
    is skipped: the result is the minimum over every block, at the cost of the few that may be below it.
    """
    suffixes, alphas = evidence.suffixes(), _pass_alphas(evidence, policy)
    failed = suffixes.canary_failed.astype(np.float64)
    requests = suffixes.canary_requests.astype(np.float64)

    def bound(row: int) -> float:
        return rate_upper_bound(int(failed[row]), int(requests[row]), float(alphas[row]))

    def may_be_below(rows: IntArray, best: float) -> BoolArray:
        values = np.full(rows.size, best)
        return rate_upper_bounds_may_be_below(failed[rows], requests[rows], alphas[rows], values)

    return _smallest(whole, np.arange(len(alphas)), may_be_below, bound)


def smallest_error_excess_bound(evidence: Evidence, policy: Policy, whole: float) -> float:
    """The smallest of `whole` and, since each SLO block's start, the canary's error-rate upper bound
    minus the baseline's lower bound (each at half the block's alpha); as smallest_error_rate_bound.

    A block's excess is below `best` only if its canary bound is below best + the baseline's rate (the
    baseline's lower bound is at most its rate) and its baseline bound is above the canary's rate - best
    (the canary's upper bound is at least its rate): both are screened.
    """
    suffixes, halves = evidence.suffixes(), _pass_alphas(evidence, policy) / 2
    canary_failed = suffixes.canary_failed.astype(np.float64)
    canary_requests = suffixes.canary_requests.astype(np.float64)
    baseline_failed = suffixes.baseline_failed.astype(np.float64)
    baseline_requests = suffixes.baseline_requests.astype(np.float64)

    def bound(row: int) -> float:
        alpha = float(halves[row])
        upper = rate_upper_bound(int(canary_failed[row]), int(canary_requests[row]), alpha)
        lower = rate_lower_bound(int(baseline_failed[row]), int(baseline_requests[row]), alpha)
        return upper - lower

    with np.errstate(divide="ignore", invalid="ignore"):
        canary_open = (canary_requests > 0) & (canary_failed < canary_requests)
        canary_floor = np.where(canary_open, canary_failed / canary_requests, 1.0)
        baseline_open = (baseline_requests > 0) & (baseline_failed > 0)
        baseline_ceiling = np.where(baseline_open, np.minimum(baseline_failed / baseline_requests, 1.0), 0.0)

    def may_be_below(rows: IntArray, best: float) -> BoolArray:
        may = rate_upper_bounds_may_be_below(
            canary_failed[rows], canary_requests[rows], halves[rows], best + baseline_ceiling[rows]
        )
        left = rows[may]
        may[may] = rate_lower_bounds_may_be_above(
            baseline_failed[left], baseline_requests[left], halves[left], canary_floor[left] - best
        )
        # Closer, for the few left: the canary's bound lies above a floor, the baseline's below a ceiling.
        close = may & canary_open[rows] & baseline_open[rows]
        left = rows[close]
        if left.size:
            floors = rate_bound_brackets(
                canary_failed[left],
                canary_requests[left],
                halves[left],
                canary_floor[left],
                np.minimum(best + baseline_ceiling[left], 1.0),
                upper=True,
            )
            ceilings = rate_bound_brackets(
                baseline_failed[left],
                baseline_requests[left],
                halves[left],
                baseline_ceiling[left],
                np.maximum(canary_floor[left] - best, 0.0),
                upper=False,
            )
            may[close] = floors - ceilings < best
        return may

    return _smallest(whole, np.arange(len(halves)), may_be_below, bound)


def smallest_p99_bound(evidence: Evidence, policy: Policy, whole: float) -> float:
    """The smallest of `whole` and the canary's p99 upper bounds since each SLO block's start.

    Only a block whose bound may lie strictly below the smallest so far is computed exactly: its
    suffix must hold at least its rank's worth of latencies below that bound's bin, which is tested for
    every block at once (quantile_upper_ranks_may_reach); again each time the smallest comes down.
    """
    suffixes, alphas = evidence.suffixes(), _pass_alphas(evidence, policy)
    counts = suffixes.canary_cumulative_at(-1)

    def may_be_below(rows: IntArray, best: float) -> BoolArray:
        # A bound below `best` ends in a bin below best's (any finite bin, when best is infinite).
        below = (
            len(UPPER_EDGES) - 1 if math.isinf(best) else int(np.searchsorted(UPPER_EDGES, best, "left")) - 1
        )
        if below < 0:
            return np.zeros(rows.size, dtype=np.bool_)
        available = suffixes.canary_cumulative_at(below)[rows]
        return quantile_upper_ranks_may_reach(available, counts[rows], 0.99, alphas[rows])

    def bound(row: int) -> float:
        rank = quantile_upper_rank(float(counts[row]), 0.99, float(alphas[row]))
        return _order_statistic(suffixes.canary_cumulative(row), rank, UPPER_EDGES)

    return _smallest(whole, np.flatnonzero(counts > 0), may_be_below, bound)


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


def error_slo_check(evidence: Evidence, policy: Policy, *, compare: bool = True) -> Check:
    """Fail when, over the SLO window, the canary's error rate is surely above the SLO and the
    baseline's surely is not; hold when both may be (a shared incident); pass when surely below it.

    The pass bound is the tighter of the one since the rollout began and those since each SLO window's
    start.
    """
    failed, served = evidence.canary_failed, evidence.canary_requests
    rate = failed / served if served else 0.0
    limit = policy.max_error_rate
    breach = error_slo_breach(evidence, policy, compare=compare)
    if breach is not None:
        over = _seconds_of(evidence, breach.block)
        block = breach.block
        window_rate = block.canary_failed / block.canary_requests
        canary = f"canary error rate {window_rate:.2%} {over}, surely above the SLO {limit:.2%}"
        canary += f" (lower bound {breach.canary_bound:.2%})"
        if breach.canary_only:
            baseline = (
                ""
                if math.isnan(breach.baseline_bound)
                else (
                    f", while the baseline's {breach.baseline_value:.2%} is surely within it"
                    f" (upper bound {breach.baseline_bound:.2%})"
                )
            )
            return Check(
                "error_rate_slo", FAIL, window_rate, breach.canary_bound, limit, served, canary + baseline
            )
        detail = (
            f"{canary}; the baseline's is {breach.baseline_value:.2%} over the same seconds (upper bound "
            f"{breach.baseline_bound:.2%}): both may breach it, a shared incident, not the canary's"
        )
        return Check("error_rate_slo", HOLD, window_rate, breach.canary_bound, limit, served, detail)
    if policy.gates(limit):
        # ... or since an SLO window's start, so that an incident both versions shared ages out of it
        bound = smallest_error_rate_bound(evidence, policy, rate_upper_bound(failed, served, policy.alpha))
        phase = PASS if served >= policy.min_requests and bound <= limit else HOLD
        detail = f"canary error rate {rate:.2%} (upper bound {bound:.2%}), SLO {limit:.2%}"
    else:
        bound = rate
        phase = PASS if served >= policy.min_requests and rate <= limit else HOLD
        detail = f"canary error rate {rate:.2%}, SLO {limit:.2%} ({_ungated(policy, limit)})"
    return Check("error_rate_slo", phase, rate, bound, limit, served, detail)


def error_comparison_check(evidence: Evidence, policy: Policy) -> Check:
    """Fail when the error e-process shows the canary fails more often than error_fail_ratio x the
    baseline's rate + error_fail_margin.

    Pass when the canary's upper bound minus the baseline's lower bound is within the tolerance, since
    the rollout began or since an SLO window's start.
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
        detail = (
            f"{rates}: the canary fails more often than {_error_margin(policy)}"
            f" (e-value {evalue:.3g} ≥ {needed:.3g})"
        )
    elif policy.gates(tolerance):
        upper = rate_upper_bound(evidence.canary_failed, evidence.canary_requests, policy.alpha / 2)
        lower = rate_lower_bound(evidence.baseline_failed, evidence.baseline_requests, policy.alpha / 2)
        # ... or since an SLO window's start, so that an incident both versions shared ages out of it
        bound = smallest_error_excess_bound(evidence, policy, upper - lower)
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


def p99_slo_check(
    evidence: Evidence, policy: Policy, canary_cumulative: FloatArray, *, compare: bool = True
) -> Check:
    """Fail when, over the SLO window, the canary's p99 is surely above the SLO and the baseline's
    surely is not; hold when both may be; pass when surely below it (as error_slo_check)."""
    count, limit = evidence.canary_latency_count, policy.max_p99_ms
    if count <= 0:
        detail = f"{_no_latencies(evidence, policy)}; SLO {limit:.0f} ms"
        return Check("p99_slo", HOLD, math.nan, math.nan, limit, 0, detail)
    p99 = _quantile(canary_cumulative, count, 0.99)
    breach = p99_slo_breach(evidence, policy, compare=compare)
    if breach is not None:
        over = _seconds_of(evidence, breach.block)
        block = breach.block
        window_p99 = _quantile(block.canary_cumulative, float(block.canary_cumulative[-1]), 0.99)
        canary = f"canary p99 {window_p99:.1f} ms {over}, surely above the SLO {limit:.0f} ms"
        canary += f" (lower bound {breach.canary_bound:.1f} ms)"
        if breach.canary_only:
            baseline = (
                ""
                if math.isnan(breach.baseline_bound)
                else (
                    f", while the baseline's {breach.baseline_value:.1f} ms is surely within it"
                    f" (upper bound {breach.baseline_bound:.1f} ms)"
                )
            )
            return Check(
                "p99_slo", FAIL, window_p99, breach.canary_bound, limit, int(count), canary + baseline
            )
        detail = (
            f"{canary}; the baseline's is {breach.baseline_value:.1f} ms over the same seconds (upper bound "
            f"{breach.baseline_bound:.1f} ms): both may breach it, a shared incident, not the canary's"
        )
        return Check("p99_slo", HOLD, window_p99, breach.canary_bound, limit, int(count), detail)
    if policy.gates(0.01):
        rank = quantile_upper_rank(count, 0.99, policy.alpha)
        bound = smallest_p99_bound(evidence, policy, _order_statistic(canary_cumulative, rank, UPPER_EDGES))
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

    Fail when the e-process shows canary requests are slower than latency_fail_ratio x the baseline's
    quantile + latency_fail_floor_ms more often than the baseline's own requests are slower than the
    quantile; the detail gives both shares. Pass when the ratio of the canary's upper bound to the
    baseline's lower bound (confidence sequences on the quantile), each plus `latency_offset_ms`, is
    within `latency_tolerance`.
    """
    q = float(evidence.quantiles[position])
    name = f"p{_percent(q)}_vs_baseline"
    tolerance = policy.latency_tolerance
    evalue, needed = evidence.latency_evalue(position), 1.0 / fail_alpha(policy)
    canary_count, baseline_count = evidence.canary_latency_count, evidence.baseline_latency_count
    if canary_count <= 0 or baseline_count <= 0:
        detail = _no_latencies(evidence, policy)
        return Check(name, HOLD, math.nan, math.nan, tolerance, int(canary_count), detail, evalue, needed)
    canary_value = _quantile(canary_cumulative, canary_count, q)
    baseline_value = _quantile(baseline_cumulative, baseline_count, q)
    offset = policy.latency_offset_ms
    ratio = (canary_value + offset) / (baseline_value + offset)
    values = f"canary {canary_value:.1f} ms vs baseline {baseline_value:.1f} ms (ratio {ratio:.2f})"
    compared = evidence.canary_requests >= policy.min_requests
    if evalue >= needed:
        phase, bound = FAIL, math.nan
        detail = f"{_exceedance(evidence, policy, position)}: canary requests are slower ({values}; "
        detail += f"e-value {evalue:.3g} ≥ {needed:.3g})"
    elif policy.gates(1.0 - q):
        canary_rank = quantile_upper_rank(canary_count, q, policy.alpha / 2)
        baseline_rank = quantile_lower_rank(baseline_count, q, policy.alpha / 2)
        canary_upper = _order_statistic(canary_cumulative, canary_rank, UPPER_EDGES)
        baseline_lower = _order_statistic(baseline_cumulative, baseline_rank, LOWER_EDGES)
        bound = (canary_upper + offset) / (baseline_lower + offset)
        phase = PASS if compared and bound <= tolerance else HOLD
        detail = f"{values}, at most {bound:.2f} (tolerance {tolerance:.2f}; e-value {evalue:.3g})"
    else:
        bound = ratio
        phase = PASS if compared and ratio <= tolerance else HOLD
        detail = f"{values}, tolerance {tolerance:.2f} ({_ungated(policy, 1.0 - q)}; e-value {evalue:.3g})"
    return Check(name, phase, ratio, bound, tolerance, int(canary_count), detail, evalue, needed)


def _exceedance(evidence: Evidence, policy: Policy, position: int) -> str:
    """The shares of requests above the thresholds of one latency test, and its margin, in words."""
    canary_share = evidence.canary_exceeding[position] / max(evidence.canary_compared[position], 1.0)
    baseline_share = evidence.baseline_exceeding[position] / max(evidence.baseline_compared[position], 1.0)
    threshold = max(evidence.latency_thresholds[position], 0)
    quantile = f"p{_percent(float(evidence.quantiles[position]))}"
    margin = (
        f"{policy.latency_fail_ratio:g} × the baseline's {quantile} + {policy.latency_fail_floor_ms:g} ms"
    )
    canary_limit, baseline_limit = evidence.canary_limit_ms(threshold), float(UPPER_EDGES[threshold])
    return (
        f"{canary_share:.2%} of canary requests above {margin} (now {canary_limit:.1f} ms) vs "
        f"{baseline_share:.2%} of baseline requests above its {quantile} (now {baseline_limit:.1f} ms)"
    )


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


def _error_margin(policy: Policy) -> str:
    """The failing side's margin on errors, in words."""
    ratio = policy.error_fail_ratio
    rate = "the baseline's rate" if ratio == 1 else f"{ratio:g} x the baseline's rate"
    return f"{rate} + {policy.error_fail_margin:.2%}"


def _no_latencies(evidence: Evidence, policy: Policy) -> str:
    """Why there are no judged latencies yet."""
    if evidence.warming_up and evidence.canary_seconds > 0:
        return (
            f"warming up: the canary's latencies are judged after its first {policy.warmup_s} s of traffic, "
            f"or once its median matches the baseline's ({evidence.canary_seconds} s so far)"
        )
    canary, baseline = evidence.canary_latency_count, evidence.baseline_latency_count
    return f"no latencies yet (canary {canary:.0f}, baseline {baseline:.0f})"


def _percent(q: float) -> str:
    return f"{q * 100:g}".replace(".", "_")


def _ungated(policy: Policy, rate: float) -> str:
    needed = math.ceil(math.log(1.0 / policy.alpha) / rate)
    return f"point estimate: min_requests {policy.min_requests} < {needed} cannot bound it"
