"""Evidence planning: how many canary requests each step needs, and how long that takes at a given traffic.

A canary passes a step only when every check of the judge passes (analysis.judge), and the pass bounds
need requests: the tighter the tolerance, the more. This module answers, before a rollout, "with this
traffic, this policy and these steps, when would a canary identical to the stable version pass each
step?", and says which requirement binds, so that a step whose `max_duration_s` cannot gather the
evidence is found in `fm validate`, not after five minutes of a held rollout.

The answer is computed with the judge's own bounds (analysis.stats) on the counts an identical canary
would show: its errors and latency quantiles at their expected values, moved `z` standard deviations
against the pass (z = 1.645 by default, so about 95% of identical canaries have passed by the time given,
each check taken alone). Latencies are those of a lognormal with the given median and 99th percentile;
the judge reads them from histogram bins 1% wide, which the plan charges against the tolerance too.
The canary's first `warmup_s` seconds of traffic are not judged on latency (analysis.evidence), so the
latency checks count only the requests of both versions after them. The plan takes the warm-up at its
full length: an identical canary at high traffic often ends it after a few seconds, and then passes a
latency-bound step up to `warmup_s` seconds sooner than planned.
Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from statistics import NormalDist
from typing import Final, Protocol

from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.stats import (
    GAMMA,
    quantile_lower_rank,
    quantile_upper_rank,
    rate_lower_bound,
    rate_upper_bound,
)

# The traffic an identical canary is assumed to see when nothing was observed: the simulator's
# `identical` scenario (bench/scenarios/identical.yaml).
DEFAULT_ERROR_RATE: Final[float] = 0.001
DEFAULT_P50_MS: Final[float] = 40.0
DEFAULT_P99_MS: Final[float] = 180.0
DEFAULT_Z: Final[float] = 1.645
# Longer than this (a week) counts as never.
_HORIZON_S: Final[float] = 7 * 24 * 3600.0
_STANDARD_NORMAL: Final[NormalDist] = NormalDist()


class StepLike(Protocol):
    """A rollout step as config.StepConfig and controller.strategy.Step both give it."""

    @property
    def weight(self) -> int: ...

    @property
    def min_duration_s(self) -> float: ...

    @property
    def max_duration_s(self) -> float: ...

    @property
    def min_requests(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Traffic:
    """What an identical canary and the baseline serve: requests per second, errors and latency shape."""

    rps: float
    error_rate: float = DEFAULT_ERROR_RATE
    p50_ms: float = DEFAULT_P50_MS
    p99_ms: float = DEFAULT_P99_MS

    def latency_ms(self, level: float) -> float:
        """The latency at quantile `level` of the lognormal with this median and p99 (inf at 1 or more)."""
        if level >= 1.0:
            return math.inf
        if level <= 0.0:
            return 0.0
        if self.p99_ms <= self.p50_ms:
            return self.p50_ms
        sigma = math.log(self.p99_ms / self.p50_ms) / _STANDARD_NORMAL.inv_cdf(0.99)
        return self.p50_ms * math.exp(sigma * _STANDARD_NORMAL.inv_cdf(level))


@dataclass(frozen=True, slots=True)
class Requirement:
    """One thing a step waits for, and when it is met (seconds into the step; inf: never)."""

    name: str
    seconds: float
    detail: str


@dataclass(frozen=True, slots=True)
class StepPlan:
    """When an identical canary passes one step."""

    index: int  # 1-based
    weight: int
    canary_rps: float
    seconds: float  # into the step; inf when no duration passes it
    max_duration_s: float
    step_requests: float  # canary requests gathered in the step by then
    total_requests: float  # canary requests since the rollout began, by then
    binding: Requirement  # the requirement met last
    requirements: tuple[Requirement, ...]

    @property
    def fits(self) -> bool:
        """Whether the step passes within its max_duration_s."""
        return self.seconds <= self.max_duration_s


@dataclass(frozen=True, slots=True)
class EvidencePlan:
    """The plan of every step, and the warnings for the steps that cannot pass in time."""

    traffic: Traffic
    steps: tuple[StepPlan, ...]
    compare: bool

    @property
    def total_seconds(self) -> float:
        """From the start of the rollout to the last step's pass (inf when a step cannot pass)."""
        return sum(step.seconds for step in self.steps)

    @property
    def warnings(self) -> list[str]:
        """One line per step whose max_duration_s cannot gather its evidence."""
        return [_warning(step, self.traffic) for step in self.steps if not step.fits]


def plan_evidence(
    traffic: Traffic,
    policy: Policy,
    steps: Sequence[StepLike],
    *,
    compare: bool = True,
    fresh_baseline: bool = False,
    z: float = DEFAULT_Z,
) -> EvidencePlan:
    """When an identical canary passes each of `steps` at this traffic, and what binds each step.

    The judge counts evidence since the rollout began, so a step starts with what the previous steps
    gathered. A step that cannot pass within its max_duration_s is planned as if it were held there until
    it passes (the time is still reported), so that every step has a plan. `compare=False` is blue/green:
    only the SLO checks and the evidence count. With `fresh_baseline` the baseline is new instances of
    stable at the canary's weight, so it serves as many requests as the canary.
    """
    canary_total = baseline_total = 0.0
    warm_canary = warm_baseline = 0.0  # requests of the warm-up's seconds in earlier steps
    elapsed = 0.0  # seconds since the rollout began, at the start of the step
    plans: list[StepPlan] = []
    for index, step in enumerate(steps, start=1):
        canary_rps = traffic.rps * step.weight / 100.0
        baseline_rps = canary_rps if fresh_baseline else traffic.rps - canary_rps
        start_canary, start_baseline = canary_total, baseline_total
        warmup_left = max(policy.warmup_s - elapsed, 0.0)

        at = partial(_counts_at, start_canary, start_baseline, canary_rps, baseline_rps)
        judged = partial(
            _latency_counts_at,
            at,
            warm_canary,
            warm_baseline,
            canary_rps,
            baseline_rps,
            warmup_left,
        )
        requirements = _requirements(
            traffic, policy, step, at, judged, canary_rps, compare=compare and baseline_rps > 0, z=z
        )
        binding = max(requirements, key=lambda requirement: requirement.seconds)
        seconds = binding.seconds
        canary, baseline = at(seconds) if math.isfinite(seconds) else (math.inf, math.inf)
        plans.append(
            StepPlan(
                index=index,
                weight=step.weight,
                canary_rps=canary_rps,
                seconds=seconds,
                max_duration_s=step.max_duration_s,
                step_requests=canary_rps * seconds if math.isfinite(seconds) else math.inf,
                total_requests=canary,
                binding=binding,
                requirements=tuple(requirements),
            )
        )
        canary_total, baseline_total = canary, baseline
        in_warmup = min(seconds, warmup_left)
        warm_canary += canary_rps * in_warmup
        warm_baseline += baseline_rps * in_warmup
        elapsed += seconds
    return EvidencePlan(traffic, tuple(plans), compare)


def _requirements(
    traffic: Traffic,
    policy: Policy,
    step: StepLike,
    at: Callable[[float], tuple[float, float]],
    judged: Callable[[float], tuple[float, float]],
    canary_rps: float,
    *,
    compare: bool,
    z: float,
) -> list[Requirement]:
    """Every requirement of one step, each with the seconds into the step at which it is met.

    `at` gives the canary's and the baseline's requests since the rollout began, `judged` those whose
    latencies are judged (after the warm-up), each at a number of seconds into the step.
    """

    def first(name: str, met: Callable[[float, float], bool], detail: str) -> Requirement:
        return Requirement(name, _first_second(lambda seconds: met(*at(seconds))), detail)

    def first_judged(name: str, met: Callable[[float, float], bool], detail: str) -> Requirement:
        return Requirement(name, _first_second(lambda seconds: met(*judged(seconds))), detail)

    error = traffic.error_rate
    requirements = [
        Requirement("min_duration_s", step.min_duration_s, f"the step bakes {step.min_duration_s:g} s"),
        Requirement(
            "step min_requests",
            step.min_requests / canary_rps if canary_rps > 0 else math.inf,
            f"{step.min_requests} canary requests in the step",
        ),
        first(
            "evidence",
            lambda canary, _: canary >= policy.min_requests,
            f"{policy.min_requests} canary requests since the rollout began (min_requests)",
        ),
    ]
    if policy.gates(policy.max_error_rate):
        requirements.append(
            first(
                "error_rate_slo",
                lambda canary, _: (
                    rate_upper_bound(_more(error, canary, z), canary, policy.alpha) <= policy.max_error_rate
                ),
                f"upper bound of a {error:.2%} error rate under the SLO {policy.max_error_rate:.2%}",
            )
        )
    if policy.gates(0.01):
        requirements.append(
            first_judged(
                "p99_slo",
                lambda canary, _: (
                    _canary_upper_ms(traffic, canary, 0.99, policy.alpha, z) <= policy.max_p99_ms
                ),
                f"upper bound of the p99 ({traffic.p99_ms:g} ms) under the SLO {policy.max_p99_ms:g} ms",
            )
        )
    if not compare:
        return requirements
    if policy.gates(policy.error_rate_tolerance):
        tolerance = policy.error_rate_tolerance
        requirements.append(
            first(
                "error_rate_vs_baseline",
                lambda canary, baseline: (
                    rate_upper_bound(_more(error, canary, z), canary, policy.alpha / 2)
                    - rate_lower_bound(_more(error, baseline, -z), baseline, policy.alpha / 2)
                    <= tolerance
                ),
                f"canary's upper bound minus the baseline's lower bound within {tolerance:.2%}",
            )
        )
    for q in policy.quantiles:
        if not policy.gates(1.0 - q):
            continue
        name = f"p{q * 100:g}".replace(".", "_") + "_vs_baseline"
        within = partial(
            _latency_within, traffic, q, policy.alpha, z, policy.latency_tolerance, policy.latency_offset_ms
        )
        detail = f"canary's upper bound over the baseline's lower bound within {policy.latency_tolerance:g}x"
        requirements.append(first_judged(name, within, detail))
    return requirements


def _counts_at(
    canary: float, baseline: float, canary_rps: float, baseline_rps: float, seconds: float
) -> tuple[float, float]:
    """Canary and baseline requests since the rollout began, `seconds` into a step that started with these."""
    return canary + canary_rps * seconds, baseline + baseline_rps * seconds


def _latency_counts_at(
    at: Callable[[float], tuple[float, float]],
    warm_canary: float,
    warm_baseline: float,
    canary_rps: float,
    baseline_rps: float,
    warmup_left: float,
    seconds: float,
) -> tuple[float, float]:
    """Canary and baseline requests whose latencies are judged, `seconds` into a step.

    The requests of the warm-up's seconds are left out: `warm_canary` and `warm_baseline` from earlier
    steps, and the step's own first `warmup_left` seconds.
    """
    canary, baseline = at(seconds)
    in_warmup = min(seconds, warmup_left)
    return (
        max(canary - warm_canary - canary_rps * in_warmup, 0.0),
        max(baseline - warm_baseline - baseline_rps * in_warmup, 0.0),
    )


def _more(rate: float, trials: float, z: float) -> float:
    """The events of `trials` at `rate`, moved z standard deviations up (down for z < 0), within range."""
    if trials <= 0:
        return 0.0
    return min(max(rate * trials + z * math.sqrt(rate * (1.0 - rate) * trials), 0.0), trials)


def _canary_upper_ms(traffic: Traffic, count: float, q: float, alpha: float, z: float) -> float:
    """The canary's upper bound of its q-quantile as the judge reads it from the histogram, in ms."""
    if count <= 0:
        return math.inf
    rank = quantile_upper_rank(count, q, alpha)
    if rank > count:
        return math.inf
    level = rank / count
    level += z * math.sqrt(level * (1.0 - level) / count)
    return traffic.latency_ms(level) * GAMMA  # the upper edge of its bin


def _baseline_lower_ms(traffic: Traffic, count: float, q: float, alpha: float, z: float) -> float:
    """The baseline's lower bound of its q-quantile as the judge reads it from the histogram, in ms."""
    if count <= 0:
        return 0.0
    rank = quantile_lower_rank(count, q, alpha)
    if rank < 1:
        return 0.0
    level = rank / count
    level -= z * math.sqrt(level * (1.0 - level) / count)
    return traffic.latency_ms(level) / GAMMA  # the lower edge of its bin


def _latency_ratio(
    traffic: Traffic, canary: float, baseline: float, q: float, alpha: float, z: float, offset_ms: float
) -> float:
    """The pass statistic of a latency test: (canary upper + offset) / (baseline lower + offset)."""
    upper = _canary_upper_ms(traffic, canary, q, alpha / 2, z)
    lower = _baseline_lower_ms(traffic, baseline, q, alpha / 2, z)
    return (upper + offset_ms) / (lower + offset_ms)


def _latency_within(
    traffic: Traffic,
    q: float,
    alpha: float,
    z: float,
    tolerance: float,
    offset_ms: float,
    canary: float,
    baseline: float,
) -> bool:
    """Whether a latency comparison at quantile q passes with these canary and baseline requests."""
    return _latency_ratio(traffic, canary, baseline, q, alpha, z, offset_ms) <= tolerance


def _first_second(met: Callable[[float], bool]) -> float:
    """The first time (to the second) at which `met` holds; inf when it does not within a week.

    The requirements only get easier as requests accumulate, so a doubling search and a bisection find it.
    """
    if met(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while not met(high):
        low, high = high, high * 2.0
        if high > _HORIZON_S:
            return math.inf
    while high - low > 1.0:
        middle = math.floor((low + high) / 2.0)
        if middle <= low:
            break
        if met(middle):
            high = middle
        else:
            low = middle
    return high


def _warning(step: StepPlan, traffic: Traffic) -> str:
    binding = step.binding
    if math.isinf(step.seconds):
        when = "never passes"
    else:
        when = f"needs about {step.seconds:.0f} s ({step.step_requests:.0f} canary requests in the step)"
    return (
        f"step {step.index} ({step.weight}% of {traffic.rps:g} req/s) {when}, longer than its "
        f"max_duration_s {step.max_duration_s:g} s: {binding.name} ({binding.detail}); the rollout would "
        "be held for a person. Raise the step's weight or max_duration_s, or send more traffic (a load-test "
        "hook)."
    )


def format_plan(plan: EvidencePlan) -> list[str]:
    """The plan as lines for a person: one per step, then the warnings."""
    traffic = plan.traffic
    lines = [
        f"evidence plan at {traffic.rps:g} req/s, for a canary identical to stable (errors "
        f"{traffic.error_rate:.2%}, latency p50 {traffic.p50_ms:g} ms, p99 {traffic.p99_ms:g} ms):"
    ]
    for step in plan.steps:
        if math.isinf(step.seconds):
            timing = "never passes"
        else:
            timing = (
                f"passes after about {step.seconds:.0f} s (max {step.max_duration_s:g} s): "
                f"{step.step_requests:.0f} canary requests in the step, {step.total_requests:.0f} in all"
            )
        lines.append(
            f"  step {step.index}: {step.weight}% ({step.canary_rps:.3g} canary req/s) {timing}; "
            f"binding: {step.binding.name}"
        )
    total = plan.total_seconds
    if math.isfinite(total):
        lines.append(f"  promoted after about {total:.0f} s")
    else:
        lines.append("  never promoted at this traffic")
    lines.extend(f"warning: {warning}" for warning in plan.warnings)
    return lines
