"""The judge under real-traffic nuisances: false rollbacks of identical canaries, and bad canaries caught.

    .venv/bin/python bench/nuisances.py [--runs N] [--rates 1000,100] [--only NAME] [--json]

What it compares: fridaymorning's judge (analysis.judge with the default analysis policy, or the
fields given with --policy key=value) deciding simulation.simulate.DEFAULT_PLAN through
controller.strategy.next_action, as `fm simulate` runs it, against the targets of the judge's issue
on real services: at most 1% false rollbacks of an identical canary in each nuisance scenario, and
each bad canary still rolled back (5% errors within 3 s p95 at 1000 req/s with at most 20 excess
failed requests; p99 +25% within 60 s p95; +40 ms).

The traffic is drawn here, second by second, by its own generator (not simulation.traffic), so that
the nuisances can be varied beside `fm simulate`'s scenarios: Poisson requests split binomially at
the weight in force, binomial failures, and one multinomial latency histogram per second over
DDSketch's bins, from a lognormal fitted to p50/p99, scaled by a factor (incident, cold start),
shifted by a constant (+40 ms), and optionally truncated to whole milliseconds as HAProxy logs Tr.

Scenarios (identical versions unless said; 40/180 ms lognormal, 0.1% errors):
- identical: nothing else;
- resolution-1ms: a sub-millisecond service (p50 0.4 ms, p99 1.5 ms) logged in whole milliseconds;
- resolution-1ms-canary-10pct: the same, with the canary 10% slower (0.44/1.65 ms): not a regression
  that matters (within the 1 ms floor);
- shared-incident: from 60 s for 20 s both versions fail 30% of requests and are 3x slower;
- cold-start: the canary is 3x slower for its first 30 s of traffic;
- fresh-baseline (and fresh-baseline-cold-start): the baseline is new instances of stable at the
  canary's weight (both cold for 30 s in the second);
- bad-errors-5pct, bad-p99-plus-25 (p99 180 → 225 ms, same median), bad-plus-40ms: bad canaries.

The last line is one JSON object: {"compares", "policy", "runs", "results": {rate: {scenario: summary}}}.
"""

from __future__ import annotations

import argparse
import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.stats import norm

from fridaymorning.analysis.evidence import EMPTY_SECOND, ArmSecond, Evidence
from fridaymorning.analysis.judge import fails, verdict_of
from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.stats import HISTOGRAM_SIZE, UPPER_EDGES, index_of_value, lognormal_parameters
from fridaymorning.analysis.verdict import Verdict, VerdictPhase
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.controller.strategy import ActionKind, next_action
from fridaymorning.simulation.simulate import DEFAULT_PLAN

COMPARES = (
    "fm judge (default analysis policy, DEFAULT_PLAN) under real-traffic nuisances vs the targets: "
    "≤1% false rollbacks of identical canaries; bad canaries rolled back"
)
DURATION_S = 900
STARTUP_S = 1.0


@dataclass(frozen=True)
class Version:
    """How one version answers, apart from incidents: errors, lognormal latency, a shift, a cold start."""

    error_rate: float = 0.001
    p50_ms: float = 40.0
    p99_ms: float = 180.0
    shift_ms: float = 0.0
    cold_s: int = 0  # seconds of the version's first traffic that are slower by cold_factor
    cold_factor: float = 1.0


@dataclass(frozen=True)
class Scenario:
    """Two versions, the timer's resolution, a shared incident, and whether the baseline is fresh."""

    name: str
    canary: Version = Version()
    baseline: Version = Version()
    resolution_ms: float = 0.0  # 0: exact latencies; 1: whole milliseconds, truncated as HAProxy's Tr
    incident: tuple[int, int, float, float] | None = None  # at_s, duration_s, error_rate, latency_factor
    fresh_baseline: bool = False
    bad: bool = False


SUB_MS = Version(p50_ms=0.4, p99_ms=1.5)
SCENARIOS = (
    Scenario("identical"),
    Scenario("resolution-1ms", SUB_MS, SUB_MS, resolution_ms=1.0),
    Scenario("resolution-1ms-canary-10pct", Version(p50_ms=0.44, p99_ms=1.65), SUB_MS, resolution_ms=1.0),
    Scenario("shared-incident", incident=(60, 20, 0.30, 3.0)),
    Scenario("cold-start", canary=Version(cold_s=30, cold_factor=3.0)),
    Scenario("fresh-baseline", fresh_baseline=True),
    Scenario(
        "fresh-baseline-cold-start",
        Version(cold_s=30, cold_factor=3.0),
        Version(cold_s=30, cold_factor=3.0),
        fresh_baseline=True,
    ),
    Scenario("bad-errors-5pct", canary=Version(error_rate=0.05), bad=True),
    Scenario("bad-p99-plus-25", canary=Version(p99_ms=225.0), bad=True),
    Scenario("bad-plus-40ms", canary=Version(shift_ms=40.0), bad=True),
    Scenario("fresh-baseline-bad-errors-5pct", Version(error_rate=0.05), fresh_baseline=True, bad=True),
    Scenario("fresh-baseline-bad-p99-plus-25", Version(p99_ms=225.0), fresh_baseline=True, bad=True),
)


@lru_cache(maxsize=256)
def bin_probabilities(
    p50_ms: float, p99_ms: float, factor: float, shift_ms: float, resolution_ms: float
) -> tuple[int, np.ndarray]:
    """First histogram index and probabilities of the bins of factor·X + shift (X lognormal), as logged."""
    mu, sigma = lognormal_parameters(p50_ms, p99_ms)

    def cdf(values: np.ndarray) -> np.ndarray:
        scaled = (values - shift_ms) / factor
        result = np.zeros_like(values)
        positive = scaled > 0
        result[positive] = norm.cdf((np.log(scaled[positive]) - mu) / sigma)
        return result

    probabilities = np.zeros(HISTOGRAM_SIZE)
    if resolution_ms > 0:
        top = (shift_ms + factor * math.exp(mu + 8 * sigma)) / resolution_ms + 2
        steps = np.arange(0, math.ceil(top) + 1) * resolution_ms
        mass = np.diff(cdf(np.append(steps, steps[-1] + resolution_ms)))
        indexes = [index_of_value(float(value)) for value in steps]
        np.add.at(probabilities, indexes, mass)
    else:
        edges = cdf(UPPER_EDGES[1:])
        probabilities[1:] = np.diff(np.concatenate(([0.0], edges)))
        probabilities[-1] += 1.0 - edges[-1]
    probabilities = np.clip(probabilities, 0.0, None)
    (support,) = np.nonzero(probabilities > 1e-12)
    low, high = int(support[0]), int(support[-1]) + 1
    kept = probabilities[low:high]
    return low, kept / kept.sum()


def draw_arm(
    rng: np.random.Generator,
    requests: int,
    error_rate: float,
    latency: tuple[float, float, float, float, float],
) -> ArmSecond:
    """One second of one version: failures and the cumulative latency histogram."""
    if requests <= 0:
        return EMPTY_SECOND
    low, probabilities = bin_probabilities(*latency)
    counts = rng.multinomial(requests, probabilities)
    cumulative = np.full(HISTOGRAM_SIZE, float(requests))
    cumulative[:low] = 0.0
    cumulative[low : low + len(probabilities)] = np.cumsum(counts)
    return ArmSecond(requests, int(rng.binomial(requests, error_rate)), None, cumulative)


def behaviour(
    scenario: Scenario, version: Version, second: int, served_s: int
) -> tuple[float, tuple[float, float, float, float, float]]:
    """A version's error rate and latency spec during `second`, its `served_s`-th second of traffic."""
    error_rate, factor = version.error_rate, 1.0
    if served_s <= version.cold_s:
        factor *= version.cold_factor
    if scenario.incident is not None:
        at, duration, incident_errors, incident_factor = scenario.incident
        if at <= second < at + duration:
            error_rate, factor = max(error_rate, incident_errors), factor * incident_factor
    spec = (version.p50_ms, version.p99_ms, factor, version.shift_ms, scenario.resolution_ms)
    return error_rate, spec


_PROBES = (Verdict(VerdictPhase.PASS, (), "probe"), Verdict(VerdictPhase.HOLD, (), "probe"))


def run(scenario: Scenario, rps: float, policy: Policy, seed: int) -> dict[str, Any]:
    """One rollout of DEFAULT_PLAN, judged as simulation.simulate.run_fm judges it."""
    rng = np.random.default_rng(seed)
    plan = DEFAULT_PLAN
    state = RolloutState(
        1, "sim", "canary", "baseline", RolloutPhase.PROGRESSING, 0, plan.steps[0].weight, 0.0, STARTUP_S
    )
    evidence = Evidence(policy)
    weight, weight_from = state.canary_weight, math.ceil(STARTUP_S)
    canary_served = 0
    failed = expected = 0.0
    step_requests, now, stayed = 0, STARTUP_S, False
    second = 1
    while now + 1 <= DURATION_S:
        now += 1.0
        while second < math.floor(now):
            current = weight if second >= weight_from else 0
            total = int(rng.poisson(rps))
            canary_n = int(rng.binomial(total, current / 100))
            rest = total - canary_n
            if scenario.fresh_baseline:
                baseline_n = int(rng.binomial(rest, current / (100 - current))) if current else rest
            else:
                baseline_n = rest
            canary_served += canary_n > 0
            # A fresh baseline starts with the canary; the stable one has served for long.
            baseline_served = canary_served if scenario.fresh_baseline else 10**9
            canary_rate, canary_spec = behaviour(scenario, scenario.canary, second, canary_served)
            baseline_rate, baseline_spec = behaviour(scenario, scenario.baseline, second, baseline_served)
            canary = draw_arm(rng, canary_n, canary_rate, canary_spec)
            baseline = draw_arm(rng, baseline_n, baseline_rate, baseline_spec)
            evidence.add(canary, baseline)
            failed += canary.failed
            expected += canary_n * baseline_rate
            if second > math.floor(state.step_started_at):
                step_requests += canary_n
            second += 1
        if (
            stayed
            and not fails(evidence, policy)
            and all(next_action(state, p, now, plan, step_requests).kind is ActionKind.STAY for p in _PROBES)
        ):
            continue
        verdict = verdict_of(evidence, policy)
        action = next_action(state, verdict, now, plan, step_requests)
        stayed = action.kind is ActionKind.STAY
        if action.kind is ActionKind.ADVANCE:
            assert action.step_index is not None and action.canary_weight is not None
            state = replace(state, step_index=action.step_index, canary_weight=action.canary_weight)
            state = replace(state, step_started_at=now)
            weight, weight_from = action.canary_weight, math.ceil(now)
            step_requests = 0
        elif action.kind is not ActionKind.STAY:
            outcome = {
                ActionKind.PROMOTE: "promoted",
                ActionKind.ROLLBACK: "rolled_back",
            }.get(action.kind, "undecided")
            decided = outcome != "undecided"
            return {
                "outcome": outcome,
                "decision_s": now - STARTUP_S if decided else None,
                "excess": failed - expected,
                "reason": action.reason,
            }
    return {"outcome": "undecided", "decision_s": None, "excess": failed - expected, "reason": "time"}


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Outcome counts, decision-time and excess-failure percentiles, and one example reason per outcome."""
    names = ("promoted", "rolled_back", "undecided")
    outcomes = {name: sum(r["outcome"] == name for r in results) for name in names}
    times = [r["decision_s"] for r in results if r["decision_s"] is not None]
    rolled = [r["decision_s"] for r in results if r["outcome"] == "rolled_back"]
    excess = [r["excess"] for r in results]

    def percentiles(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        p50, p95 = np.percentile(values, [50, 95])
        return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "max": round(float(max(values)), 1)}

    reasons: dict[str, str] = {}
    for result in results:
        reasons.setdefault(result["outcome"], result["reason"][:300])
    return {
        "runs": len(results),
        "outcomes": outcomes,
        "decision_s": percentiles(times),
        "rollback_s": percentiles(rolled),
        "excess_bad": percentiles(excess),
        "reasons": reasons,
    }


def _batch(scenario: Scenario, rps: float, policy: Policy, seeds: list[int]) -> list[dict[str, Any]]:
    return [run(scenario, rps, policy, seed) for seed in seeds]


def measure(scenario: Scenario, rps: float, policy: Policy, runs: int, workers: int) -> dict[str, Any]:
    """Run `runs` rollouts of a scenario at `rps`, spread over `workers` processes."""
    seeds = list(range(runs))
    if workers <= 1:
        return summarise(_batch(scenario, rps, policy, seeds))
    with ProcessPoolExecutor(workers) as pool:
        batches = [seeds[start::workers] for start in range(workers)]
        futures = [pool.submit(_batch, scenario, rps, policy, batch) for batch in batches]
        results = [result for future in futures for result in future.result()]
    return summarise(results)


def parse_policy(pairs: list[str]) -> Policy:
    """A Policy from key=value pairs (values as JSON)."""
    fields = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        fields[key] = json.loads(value)
    return Policy(**fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rates", default="1000,100")
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--policy", action="append", default=[], help="an analysis field, key=json")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    policy = parse_policy(args.policy)
    results: dict[str, dict[str, Any]] = {}
    for rate in [float(r) for r in args.rates.split(",")]:
        by_scenario = results.setdefault(f"{rate:g}", {})
        for scenario in SCENARIOS:
            if args.only and scenario.name not in args.only:
                continue
            summary = measure(scenario, rate, policy, args.runs, args.workers)
            by_scenario[scenario.name] = summary
            if not args.json:
                o = summary["outcomes"]
                print(
                    f"{rate:>6g} req/s  {scenario.name:32s} promoted {o['promoted']:4d}  rolled back "
                    f"{o['rolled_back']:4d}  undecided {o['undecided']:4d}  "
                    f"decision {summary['decision_s']}  excess bad {summary['excess_bad']}",
                    flush=True,
                )
                if scenario.bad is False and o["rolled_back"]:
                    print(f"         e.g. {summary['reasons']['rolled_back']}", flush=True)
    changed = {k: v for k, v in policy.model_dump().items() if Policy.model_fields[k].default != v}
    policy_json = policy.model_dump(mode="json")
    output = {"compares": COMPARES, "policy": policy_json, "changed": changed, "runs": args.runs}
    print(json.dumps({**output, "results": results}))


if __name__ == "__main__":
    main()
