"""`fm replay`: re-run the judge over the stored windows of a rollout, and compare with what was decided.

Each judged event stores the seconds it looked at. Replaying judges the same seconds of the same
series again, from the metric store, with the service's current policy, twice: from scratch (every
second folded again, `judge.judge`) and as the controller does it (the evidence kept from one event to
the next, folding only the seconds not folded yet). A decision that comes out differently either way
is reported. Custom checks queried other systems at the time: their recorded outcomes are taken as
they were, and combined with the replayed judge's checks, both ways.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fridaymorning.analysis.evidence import RunningEvidence
from fridaymorning.analysis.judge import judge, verdict_of
from fridaymorning.analysis.verdict import Check, VerdictPhase, combine
from fridaymorning.config import ServiceConfig
from fridaymorning.controller.judging import Query
from fridaymorning.controller.phases import RolloutState
from fridaymorning.controller.planner import judged_series


@dataclass(frozen=True, slots=True)
class ReplayedDecision:
    """One stored judgement next to the judgement replayed on the same seconds."""

    at: float
    kind: str
    start: int
    end: int
    recorded: str
    replayed: str
    # The same judgement with the evidence carried over from the previous event, as the controller folds it
    incremental: str

    @property
    def same(self) -> bool:
        return self.recorded == self.replayed == self.incremental


def replay(
    rollout: RolloutState, events: list[dict[str, Any]], query: Query, service: ServiceConfig
) -> list[ReplayedDecision]:
    """Judge again every event that carries a verdict, over the same seconds and series."""
    series = judged_series(service, rollout)
    custom = {check.name for check in service.rollout.checks}
    policy = service.analysis
    running = RunningEvidence(policy)
    decisions = []
    for event in events:
        verdict = event.get("verdict") or {}
        window = verdict.get("window")
        if window is None or not replayable(verdict):
            continue
        start, end = int(window["start"]), int(window["end"])
        canary = query(series.canary_backend, series.canary_version, start, end)
        baseline = query(series.baseline_backend, series.baseline_version, start, end)
        replayed = judge(canary, baseline, policy, compare=series.compare)
        if end < running.unread_from(start):  # judged fewer seconds than before: start over
            running = RunningEvidence(policy)
        first = running.unread_from(start)
        running.fold(
            [window for window in canary if window.second >= first],
            [window for window in baseline if window.second >= first],
        )
        incremental = verdict_of(running.evidence, policy, compare=series.compare)
        recorded = tuple(recorded_check(c) for c in verdict.get("checks", []) if c["name"] in custom)
        if recorded:
            replayed = combine((*replayed.checks, *recorded))
            incremental = combine((*incremental.checks, *recorded))
        decisions.append(
            ReplayedDecision(
                event["at"],
                event["kind"],
                start,
                end,
                verdict["phase"],
                replayed.phase.value,
                incremental.phase.value,
            )
        )
    return decisions


def recorded_check(check: dict[str, Any]) -> Check:
    """A check as the state store recorded it (its numbers may be missing: only its phase decides)."""

    def number(key: str) -> float:
        value = check.get(key)
        return float(value) if isinstance(value, int | float) else math.nan

    return Check(
        check["name"],
        VerdictPhase(check["phase"]),
        number("statistic"),
        number("bound"),
        number("threshold"),
        int(check.get("n") or 0),
        str(check.get("detail", "")),
    )


def replayable(verdict: dict[str, Any]) -> bool:
    """Verdicts from outside the metric store's data cannot be replayed: HAProxy's health view, a failed
    hook, and a store that could not be read at the time (`metrics`: it has the data now)."""
    outside = {"canary_health", "rollout_hook", "metrics"}
    return not any(check["name"] in outside for check in verdict.get("checks", []))
