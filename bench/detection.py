"""Detection benchmark: fridaymorning's sequential judge beside Flagger's and Kayenta's, one scenario matrix.

    .venv/bin/python bench/detection.py [--quick] [--json] [--timing]

What it compares: for each scenario in bench/scenarios/ (5% canary errors at 1000 and 100 req/s, identical
versions, a p99 regression of 25%, no traffic, too little traffic), many virtual rollouts are decided by

- fm: fridaymorning's judge (analysis.judge) and controller.strategy.next_action with the default
  policy (alpha 0.01) and simulation.simulate.DEFAULT_PLAN (10/25/50%, 30 s bake per step);
- flagger: Flagger's Istio-tutorial analysis as its scheduler runs it (1 min interval, success ≥ 99%,
  p99 ≤ 500 ms from Istio's buckets, threshold 5 acted upon at the next tick, stepWeight 10, maxWeight 50);
- kayenta: Kayenta's NetflixACAJudge (IQR outlier removal, Mann-Whitney with a 98% Hodges-Lehmann
  interval, tolerance 0.25, effect size), 60 s intervals, marginal 75, pass 95, 5 minutes at 10% canary.

The simulated traffic is production's: HAProxy's whole-millisecond Tr, the collector's lateness and flush
(simulation.scenario gives the defaults).

Then the reality matrix, fm only: conditions production has and lognormal traffic lacks (a shared
incident at 1000 and 100 req/s, a canary's cold start, sticky clients of unequal health, a sub-millisecond
service logged in whole milliseconds, requests that hang until HAProxy's server timeout). Each condition
has an identical canary (target: at most 1% rolled back) and three bad ones that must all be rolled back:
5% errors, p99 +25%, +40 ms. Two more: a sub-millisecond canary 0.1 ms slower (no one would roll it back:
at most 1%) and a canary that leaves 5% of requests hanging (all rolled back).

It prints a table, the targets with whether fm meets them, and, as the last line, one JSON object:
{"compares": ..., "results": {scenario: {judge: summary}}, "targets": {...}}.
--quick runs fewer rollouts (a few minutes); the full run takes about half an hour on two cores.
--timing instead times the simulator itself: 1,000 fm runs of bench/scenarios/full-length.yaml under
bench/scenarios/configs/full-length.yaml, where no rollout ends early, so every run judges all 900
seconds at 1000 req/s (issue 4's "1,000 runs of a 15-minute scenario in under a minute"). It prints
one JSON object with the elapsed seconds, the CPU seconds of this process and its workers, and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from fridaymorning.simulation.scenario import load_scenario
from fridaymorning.simulation.simulate import JUDGES, JudgeName, plan_and_policy, simulate, summary_table

SCENARIOS = Path(__file__).parent / "scenarios"
MATRIX = (
    "five-percent-errors",
    "five-percent-errors-100rps",
    "identical",
    "p99-plus-25",
    "no-traffic",
    "too-little-traffic",
)
# Conditions of production (bench/scenarios/CONDITION.yaml: identical versions; CONDITION-errors-5pct,
# -p99-plus-25 and -plus-40ms: bad canaries), judged by fm only.
REALITY = (
    "shared-incident",
    "shared-incident-100rps",
    "cold-start",
    "sticky-clients",
    "sub-millisecond",
    "timeouts",
)
BAD_CASES = ("errors-5pct", "p99-plus-25", "plus-40ms")
# Canaries no one would roll back, beside the identical ones, and bad ones beside the three bad cases.
HARMLESS = ("sub-millisecond-slower-0.1ms",)
HARMFUL = ("timeouts-canary-hangs",)
# Rollouts per scenario: identical versions need many to measure a 1% false-rollback rate.
RUNS = {"full": {"identical": 1000, "default": 300}, "quick": {"identical": 200, "default": 40}}
COMPARES = (
    "fm (sequential e-process judge, alpha 0.01, DEFAULT_PLAN) vs flagger (Istio tutorial analysis) "
    "vs kayenta (NetflixACAJudge: 98% Hodges-Lehmann interval, tolerance 0.25, IQR outliers; marginal 75) "
    "on the same simulated traffic"
)


def targets(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Issue 4's targets, each with the measured value and whether fm meets it."""
    fm = {name: by_judge["fm"] for name, by_judge in results.items()}
    flagger_excess = results["five-percent-errors"]["flagger"]["excess_bad_requests"]["p95"]
    fm_excess = fm["five-percent-errors"]["excess_bad_requests"]["p95"]
    identical = fm["identical"]
    rows = {
        "5% errors @1000 rps: decision p95 ≤ 3 s": fm["five-percent-errors"]["decision_s"]["p95"],
        "5% errors @1000 rps: excess bad p95 ≤ 20": fm_excess,
        "5% errors @100 rps: decision p95 ≤ 25 s": fm["five-percent-errors-100rps"]["decision_s"]["p95"],
        "5% errors: ≥ 50x fewer excess bad than flagger": round(flagger_excess / max(fm_excess, 1e-9), 1),
        "identical: rolled back ≤ 1%": identical["outcomes"]["rolled_back"] / identical["runs"],
        "identical: promoted within 5 min (max decision ≤ 300 s)": identical["decision_s"]["max"],
        "p99 +25%: detected, decision p95 ≤ 60 s": fm["p99-plus-25"]["decision_s"]["p95"],
        "no traffic: never promoted": fm["no-traffic"]["outcomes"]["promoted"],
        "too little traffic: never promoted": fm["too-little-traffic"]["outcomes"]["promoted"],
    }
    limits = [3, 20, 25, 50, 0.01, 300, 60, 0, 0]
    checks = [
        lambda value, limit: value is not None and value <= limit,
        lambda value, limit: value is not None and value <= limit,
        lambda value, limit: value is not None and value <= limit,
        lambda value, limit: value >= limit,
        lambda value, limit: value <= limit,
        lambda value, limit: value is not None and value <= limit,
        lambda value, limit: value is not None and value <= limit,
        lambda value, limit: value == limit,
        lambda value, limit: value == limit,
    ]
    return {
        name: {"value": value, "met": bool(check(value, limit))}
        for (name, value), limit, check in zip(rows.items(), limits, checks, strict=True)
    }


def reality_names() -> list[tuple[str, str]]:
    """(scenario, kind) of the reality matrix; kind is 'identical' (harmless) or 'bad'."""
    names = []
    for condition in REALITY:
        names.append((condition, "identical"))
        names.extend((f"{condition}-{case}", "bad") for case in BAD_CASES)
    names.extend((name, "identical") for name in HARMLESS)
    names.extend((name, "bad") for name in HARMFUL)
    return names


def reality_targets(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Issue 8's targets: ≤ 1% of harmless canaries rolled back, every bad one rolled back."""
    measured: dict[str, dict[str, Any]] = {}
    for name, kind in reality_names():
        summary = results[name]["fm"]
        rolled_back, runs = summary["outcomes"]["rolled_back"], summary["runs"]
        if kind == "identical":
            share = rolled_back / runs
            measured[f"{name}: rolled back ≤ 1%"] = {"value": share, "met": share <= 0.01}
        else:
            value = f"{rolled_back}/{runs}, decision p95 {summary['decision_s']['p95']} s"
            measured[f"{name}: all rolled back"] = {"value": value, "met": rolled_back == runs}
    return measured


def timing(runs: int = 1000) -> dict[str, Any]:
    """Time `runs` full-length fm runs, as `fm simulate` runs them (all cores)."""
    scenario = load_scenario(SCENARIOS / "full-length.yaml")
    plan, policy, interval = plan_and_policy(SCENARIOS / "configs" / "full-length.yaml")
    load_before = os.getloadavg()[0]
    started, cpu_started = time.monotonic(), _cpu_seconds()
    summary = simulate(scenario, plan, policy, runs=runs, judge_interval_s=interval)
    return {
        "scenario": scenario.name,
        "runs": runs,
        "elapsed_s": round(time.monotonic() - started, 1),
        "cpu_s": round(_cpu_seconds() - cpu_started, 1),
        "cores": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "outcomes": summary["outcomes"],
    }


def _cpu_seconds() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rollouts per scenario (under a minute)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--timing", action="store_true", help="time 1,000 full-length fm runs instead")
    parser.add_argument("--no-reality", action="store_true", help="only the original matrix")
    parser.add_argument("--only-reality", action="store_true", help="only the reality matrix")
    args = parser.parse_args(argv)
    if args.timing:
        print(json.dumps(timing()))
        return 0
    runs = RUNS["quick" if args.quick else "full"]
    console = Console(stderr=args.json, width=170)
    started = time.monotonic()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    summaries = []
    planned: list[tuple[str, tuple[JudgeName, ...], int]] = []
    if not args.only_reality:
        planned += [(name, JUDGES, runs.get(name, runs["default"])) for name in MATRIX]
    if not args.no_reality:
        planned += [
            (name, ("fm",), runs[kind if kind == "identical" else "default"])
            for name, kind in reality_names()
        ]
    for name, judges, count in planned:
        scenario = load_scenario(SCENARIOS / f"{name}.yaml")
        results[name] = {}
        for judge in judges:
            summary = simulate(scenario, runs=count, judge=judge)
            results[name][judge] = summary
            summaries.append(summary)
            outcomes = summary["outcomes"]
            print(
                f"{time.monotonic() - started:6.0f} s  {name} / {judge}: {outcomes['promoted']} promoted, "
                f"{outcomes['rolled_back']} rolled back, {outcomes['undecided']} undecided of {count}",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.monotonic() - started
    measured = {} if args.only_reality else targets(results)
    if not args.no_reality:
        measured |= reality_targets(results)
    if not args.json:
        console.print(COMPARES)
        console.print(summary_table(summaries, title=f"detection benchmark ({elapsed:.0f} s)"))
        for target, outcome in measured.items():
            mark = "[green]met[/]" if outcome["met"] else "[red]MISSED[/]"
            console.print(f"{mark}  {target}: {outcome['value']}")
    print(
        json.dumps(
            {"compares": COMPARES, "elapsed_s": round(elapsed, 1), "results": results, "targets": measured}
        )
    )
    return 0 if all(outcome["met"] for outcome in measured.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
