"""`fm replay`: re-run the judge over the stored windows of a rollout, and compare with what was decided.

Each judged event stores the seconds it looked at. Replaying judges the same seconds of the same
series again, from the metric store, with the service's current policy, twice: from scratch (every
second folded again, `judge.judge`) and as the controller does it (the evidence kept from one event to
the next, folding only the seconds not folded yet). A decision that comes out differently either way
is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fridaymorning.analysis.evidence import RunningEvidence
from fridaymorning.analysis.judge import judge, verdict_of
from fridaymorning.config import ServiceConfig
from fridaymorning.controller.loop import judged_series
from fridaymorning.controller.phases import RolloutState
from fridaymorning.models import Window

Query = Callable[[str, str, int, int], list[Window]]


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
    policy = service.analysis
    running = RunningEvidence(policy)
    decisions = []
    for event in events:
        verdict = event.get("verdict") or {}
        window = verdict.get("window")
        if window is None or not replayable(verdict):
            continue
        start, end = int(window["start"]), int(window["end"])
        canary = query(series.canary_backend, rollout.version, start, end)
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


def replayable(verdict: dict[str, Any]) -> bool:
    """Verdicts from outside the metric store (HAProxy's health view, a failed hook) cannot be replayed."""
    outside = {"canary_health", "rollout_hook"}
    return not any(check["name"] in outside for check in verdict.get("checks", []))
