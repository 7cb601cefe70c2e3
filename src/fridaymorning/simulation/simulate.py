"""`fm simulate`: many virtual rollouts of a scenario, decided by a judge, counted side by side.

For `--judge fm` each run walks the same code as production: per-second traffic enters the judge's
evidence through `Evidence.add` (what `judge()` folds the stored windows through), `judge.verdict_of`
gives the verdict, and `controller.strategy.next_action` decides, on a RolloutState moved exactly as
controller/loop.py moves it:

- the rollout is created at t = 0 (`started_at`), the canary takes traffic at the first step's weight
  from `startup_s` (`step_started_at`);
- every `judge_interval_s` the judge sees the complete seconds from floor(started_at) + 1 up to the tick
  (less the data lag: the collector's `lateness_s` and its 1 s flush, as controller/loop.py's
  judged_seconds), and next_action gets the canary requests of the current step;
- ADVANCE sets the step, the weight and step_started_at = now; PROMOTE and ROLLBACK end the run; HOLD ends
  it undecided (a person would decide), as does reaching the scenario's end.

At a tick the verdict is only built when it can change the decision (run_fm says when); the runs end
exactly as if it were built at every tick (a unit test compares both).

`flagger` and `kayenta` are the reference judges of simulation.reference, with their own step plans.
Virtual time: docs/statistics.md gives the measured cost of 1,000 runs of 15 minutes at 1,000 req/s
(bench/scenarios/full-length.yaml).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from rich.table import Table

from fridaymorning.analysis.evidence import Evidence
from fridaymorning.analysis.judge import fails, verdict_of
from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.stats import HISTOGRAM_SIZE, FloatArray
from fridaymorning.analysis.verdict import Verdict, VerdictPhase
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.controller.strategy import ActionKind, Plan, Step, next_action
from fridaymorning.simulation.reference import (
    FlaggerAnalysis,
    KayentaAnalysis,
    flagger_check,
    kayenta_score,
    per_second_metrics,
)
from fridaymorning.simulation.scenario import Scenario
from fridaymorning.simulation.traffic import TrafficStream

JudgeName = Literal["fm", "flagger", "kayenta"]
JUDGES: Final[tuple[JudgeName, ...]] = ("fm", "flagger", "kayenta")
Outcome = Literal["promoted", "rolled_back", "undecided"]

# The rollout `fm simulate` uses without --config: 10%, 25%, 50% of the traffic, each step baking at
# least 30 s and holding for a person after 10 minutes without evidence (a step's default
# max_duration_s); at least 1,000 canary requests in the first step and 500 in each later one. A canary
# identical to the baseline is promoted in about 2 minutes at 1,000 req/s, and without a person at
# 100 req/s (docs/statistics.md shows the measurements).
DEFAULT_PLAN: Final[Plan] = Plan(
    (
        Step(weight=10, min_duration_s=30, max_duration_s=600, min_requests=1000),
        Step(weight=25, min_duration_s=30, max_duration_s=600, min_requests=500),
        Step(weight=50, min_duration_s=30, max_duration_s=600, min_requests=500),
    ),
    "hold",
)
DEFAULT_JUDGE_INTERVAL_S: Final[float] = 1.0


@dataclass(frozen=True, slots=True)
class RunResult:
    """How one virtual rollout ended."""

    outcome: Outcome
    decision_s: float | None  # from the canary's first traffic to the promote or rollback
    bad_requests: int  # canary requests that failed until the decision (or the end)
    excess_bad_requests: float  # ... minus what the baseline's error rate would have failed of them
    reason: str


def simulate(
    scenario: Scenario,
    plan: Plan = DEFAULT_PLAN,
    policy: Policy | None = None,
    runs: int = 1000,
    judge: JudgeName = "fm",
    judge_interval_s: float = DEFAULT_JUDGE_INTERVAL_S,
    workers: int | None = None,
) -> dict[str, Any]:
    """Run `runs` virtual rollouts of `scenario` (run i with seed + i) and summarise them.

    The result is the JSON `fm simulate --json` prints: scenario, judge, runs, outcomes, decision_s,
    bad_requests and excess_bad_requests (percentiles over runs; decision_s over runs that decided).
    Raises ValueError for an unknown judge, naming the valid ones.
    """
    if judge not in JUDGES:
        raise ValueError(f"unknown judge {judge!r}; valid judges: {', '.join(JUDGES)}")
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    results = run_many(scenario, plan, policy or Policy(), runs, judge, judge_interval_s, workers)
    return summarise(scenario.name, judge, results)


def run_many(
    scenario: Scenario,
    plan: Plan,
    policy: Policy,
    runs: int,
    judge: JudgeName,
    judge_interval_s: float,
    workers: int | None = None,
) -> list[RunResult]:
    """Every run's result, in run order; spread over processes when there are many."""
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    seeds = [scenario.seed + index for index in range(runs)]
    if workers <= 1 or runs < 40:
        return _run_seeds(scenario, plan, policy, judge, judge_interval_s, seeds)
    batches = [seeds[start::workers] for start in range(workers)]
    # Import scipy and fit the scenario's lognormals once, before the workers fork, not once in each.
    warm = TrafficStream(scenario, np.random.default_rng(0))
    warm.set_weight(50, 0)
    warm.draw_until(scenario.duration_s)
    with ProcessPoolExecutor(workers) as pool:
        futures = [
            pool.submit(_run_seeds, scenario, plan, policy, judge, judge_interval_s, batch)
            for batch in batches
        ]
        by_seed: dict[int, RunResult] = {}
        for batch, future in zip(batches, futures, strict=True):
            by_seed.update(zip(batch, future.result(), strict=True))
    return [by_seed[seed] for seed in seeds]


def _run_seeds(
    scenario: Scenario,
    plan: Plan,
    policy: Policy,
    judge: JudgeName,
    judge_interval_s: float,
    seeds: Sequence[int],
) -> list[RunResult]:
    run = RUNNERS[judge]
    return [run(scenario, plan, policy, np.random.default_rng(seed), judge_interval_s) for seed in seeds]


def run_fm(
    scenario: Scenario,
    plan: Plan,
    policy: Policy,
    rng: np.random.Generator,
    judge_interval_s: float,
    *,
    every_tick: bool = False,
) -> RunResult:
    """One rollout decided by fridaymorning's judge and controller.strategy.next_action.

    Every second enters the evidence (Evidence.add, as judge() folds it). At a tick the verdict is only
    built when it can matter: when judge.fails says it fails, or when next_action, asked with a passing
    and with a holding verdict, would do anything but STAY with either (a step that has baked, a step out
    of time). Otherwise every verdict the judge could give leaves the rollout where it is, and the tick
    stays without building it. This relies on next_action choosing its kind from the verdict's phase
    alone (its reason only goes into the action's text). The first tick of a state (at the start, after
    an advance) is always judged in full. `every_tick=True` builds the verdict at every tick instead;
    a unit test checks both give the same results.
    """
    traffic = TrafficStream(scenario, rng)
    start = scenario.startup_s
    state = RolloutState(
        1, "simulated", "canary", "baseline", RolloutPhase.PROGRESSING, 0, plan.steps[0].weight, 0.0, start
    )
    traffic.set_weight(state.canary_weight, math.ceil(start))
    evidence = Evidence(policy)
    first_second = math.floor(state.started_at) + 1  # the loop's query starts there
    fed = first_second
    step_requests = 0
    now = start
    stayed = False  # whether the previous tick's action was STAY (so the state did not change)
    while True:
        now += judge_interval_s
        if now > scenario.duration_s:
            return _result(traffic, scenario, start, None, "undecided", "the scenario ended mid-rollout")
        available = math.floor(now - scenario.data_lag_s)
        step_start = math.floor(state.step_started_at) + 1
        while fed < available:
            canary, baseline = traffic.second(fed)
            evidence.add(canary, baseline)
            if fed >= step_start:
                step_requests += canary.requests
            fed += 1
        if (
            stayed
            and not every_tick
            and not fails(evidence, policy)
            and all(
                next_action(state, probe, now, plan, step_requests).kind is ActionKind.STAY
                for probe in _PROBES
            )
        ):
            continue
        verdict = verdict_of(evidence, policy)
        action = next_action(state, verdict, now, plan, step_requests)
        stayed = action.kind is ActionKind.STAY
        match action.kind:
            case ActionKind.ADVANCE:
                assert action.step_index is not None and action.canary_weight is not None
                state = replace(
                    state,
                    step_index=action.step_index,
                    canary_weight=action.canary_weight,
                    step_started_at=now,
                )
                traffic.set_weight(action.canary_weight, math.ceil(now))
                step_requests = traffic.visible_canary_requests(math.floor(now) + 1, fed)
            case ActionKind.PROMOTE:
                return _result(traffic, scenario, start, now, "promoted", action.reason)
            case ActionKind.ROLLBACK | ActionKind.ABORT:
                return _result(traffic, scenario, start, now, "rolled_back", action.reason)
            case ActionKind.HOLD:
                return _result(traffic, scenario, start, None, "undecided", action.reason, end=now)
            case ActionKind.STAY:
                pass


# The verdicts a tick that does not fail could have, as next_action reads them (phase only).
_PROBES: Final[tuple[Verdict, ...]] = (
    Verdict(VerdictPhase.PASS, (), "probe: any passing verdict"),
    Verdict(VerdictPhase.HOLD, (), "probe: any holding verdict"),
)


def run_flagger(
    scenario: Scenario, plan: Plan, policy: Policy, rng: np.random.Generator, judge_interval_s: float
) -> RunResult:
    """One rollout decided as Flagger's scheduler decides (its own step plan; `plan` is not used).

    A tick first rolls back if the failed checks have reached the threshold, then runs the checks:
    the check that reaches the threshold is acted upon at the next tick (simulation.reference).
    """
    analysis = FlaggerAnalysis()
    traffic = TrafficStream(scenario, rng)
    start = scenario.startup_s
    weight = analysis.step_weight
    traffic.set_weight(weight, math.ceil(start))
    failed_checks = 0
    last_failure = ""
    now = start
    while True:
        now += analysis.interval_s
        if now > scenario.duration_s:
            return _result(traffic, scenario, start, None, "undecided", "the scenario ended mid-rollout")
        if failed_checks >= analysis.threshold:
            reason = f"{failed_checks} failed checks reached the threshold; last: {last_failure}"
            return _result(traffic, scenario, start, now, "rolled_back", reason)
        end = math.floor(now - scenario.data_lag_s)
        requests, failed, histogram = _canary_totals(traffic, max(end - analysis.interval_s, 0), end)
        passed, why = flagger_check(analysis, requests, failed, histogram)
        if not passed:
            failed_checks += 1
            last_failure = why
        elif weight < analysis.max_weight:
            weight = min(weight + analysis.step_weight, analysis.max_weight)
            traffic.set_weight(weight, math.ceil(now))
        else:
            return _result(traffic, scenario, start, now, "promoted", f"passed at {weight}%: {why}")


def run_kayenta(
    scenario: Scenario, plan: Plan, policy: Policy, rng: np.random.Generator, judge_interval_s: float
) -> RunResult:
    """One rollout decided by Kayenta's NetflixACAJudge (its own analysis; `plan` is not used)."""
    analysis = KayentaAnalysis()
    traffic = TrafficStream(scenario, rng)
    start = scenario.startup_s
    traffic.set_weight(analysis.canary_weight, math.ceil(start))
    now = start
    score, why = 0.0, "no interval analysed"
    while now - start < analysis.lifetime_s:
        now += analysis.interval_s
        if now > scenario.duration_s:
            return _result(traffic, scenario, start, None, "undecided", "the scenario ended mid-analysis")
        end = math.floor(now - scenario.data_lag_s)
        canary, baseline = _per_second(traffic, max(end - analysis.interval_s, 0), end)
        score, why = kayenta_score(analysis, canary, baseline)
        if score < analysis.marginal_threshold:
            return _result(
                traffic, scenario, start, now, "rolled_back", f"interval {why} below the marginal threshold"
            )
    if score >= analysis.pass_threshold:
        return _result(traffic, scenario, start, now, "promoted", f"final {why}")
    return _result(traffic, scenario, start, now, "rolled_back", f"final {why} < pass threshold")


Runner = Callable[[Scenario, Plan, Policy, np.random.Generator, float], RunResult]
RUNNERS: Final[dict[JudgeName, Runner]] = {"fm": run_fm, "flagger": run_flagger, "kayenta": run_kayenta}


def _canary_totals(traffic: TrafficStream, start: int, end: int) -> tuple[int, int, FloatArray]:
    histogram = np.zeros(HISTOGRAM_SIZE)
    requests = failed = 0
    for second in range(start, end):
        canary, _ = traffic.second(second)
        requests += canary.requests
        failed += canary.failed
        if canary.histogram is not None:
            histogram += canary.histogram
    return requests, failed, histogram


def _per_second(traffic: TrafficStream, start: int, end: int) -> tuple[dict[str, Any], dict[str, Any]]:
    arms: list[dict[str, Any]] = []
    seconds = [traffic.second(second) for second in range(start, end)]
    for position in (0, 1):
        requests = np.array([float(pair[position].requests) for pair in seconds])
        failed = np.array([float(pair[position].failed) for pair in seconds])
        histograms = np.array(
            [
                pair[position].histogram if pair[position].histogram is not None else _EMPTY_ROW
                for pair in seconds
            ]
        ).reshape(len(seconds), -1)
        arms.append(per_second_metrics(requests, failed, histograms))
    return arms[0], arms[1]


_EMPTY_ROW = np.zeros(HISTOGRAM_SIZE)


def _result(
    traffic: TrafficStream,
    scenario: Scenario,
    first_traffic: float,
    decided_at: float | None,
    outcome: Outcome,
    reason: str,
    end: float | None = None,
) -> RunResult:
    """The run's result; requests count until the decision (or the end of the run)."""
    stop = decided_at if decided_at is not None else (end if end is not None else scenario.duration_s)
    last = min(math.ceil(stop), scenario.duration_s)
    traffic.draw_until(last)
    bad = int(traffic.canary_failed[:last].sum())
    expected = float(traffic.canary_expected_failed[:last].sum())
    decision = None if decided_at is None else decided_at - first_traffic
    return RunResult(outcome, decision, bad, bad - expected, reason)


def summarise(scenario: str, judge: str, results: Sequence[RunResult]) -> dict[str, Any]:
    """The JSON summary of runs, as `fm simulate --json` prints it."""
    outcomes = {
        name: sum(1 for r in results if r.outcome == name)
        for name in ("promoted", "rolled_back", "undecided")
    }
    decisions = [r.decision_s for r in results if r.decision_s is not None]
    bad = [float(r.bad_requests) for r in results]
    excess = [r.excess_bad_requests for r in results]
    return {
        "scenario": scenario,
        "judge": judge,
        "runs": len(results),
        "outcomes": outcomes,
        "decision_s": {
            "p50": _percentile(decisions, 50),
            "p95": _percentile(decisions, 95),
            "max": max(decisions) if decisions else None,
        },
        "bad_requests": {"p50": _percentile(bad, 50), "p95": _percentile(bad, 95)},
        "excess_bad_requests": {"p50": _percentile(excess, 50), "p95": _percentile(excess, 95)},
    }


def _percentile(values: Sequence[float], percent: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), percent)), 2)


def plan_and_policy(config_path: str | Path | None, service: str | None = None) -> tuple[Plan, Policy, float]:
    """The rollout plan, judge policy and judge interval of a service in a fridaymorning.yaml.

    Without a config: DEFAULT_PLAN, the default Policy and DEFAULT_JUDGE_INTERVAL_S. Raises ConfigError.
    """
    if config_path is None:
        return DEFAULT_PLAN, Policy(), DEFAULT_JUDGE_INTERVAL_S
    from fridaymorning.config import load_config
    from fridaymorning.controller.strategy import plan_of

    chosen = load_config(config_path).service(service)
    return plan_of(chosen), chosen.analysis, chosen.rollout.judge_interval_s


def summary_table(summaries: Sequence[dict[str, Any]], title: str = "fm simulate") -> Table:
    """A rich table of simulate() summaries, one row per scenario and judge."""
    table = Table(title=title)
    for column in ("scenario", "judge", "runs", "promoted", "rolled back", "undecided"):
        table.add_column(column, justify="left" if column in ("scenario", "judge") else "right")
    for column in ("decision p50/p95/max s", "bad p50/p95", "excess bad p50/p95"):
        table.add_column(column, justify="right")
    for summary in summaries:
        outcomes, runs = summary["outcomes"], summary["runs"]
        decision, bad, excess = summary["decision_s"], summary["bad_requests"], summary["excess_bad_requests"]
        table.add_row(
            summary["scenario"],
            summary["judge"],
            str(runs),
            *(
                f"{outcomes[name]} ({outcomes[name] / runs:.1%})"
                for name in ("promoted", "rolled_back", "undecided")
            ),
            "/".join(_number(decision[key]) for key in ("p50", "p95", "max")),
            "/".join(_number(bad[key]) for key in ("p50", "p95")),
            "/".join(_number(excess[key]) for key in ("p50", "p95")),
        )
    return table


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"
