"""`fm replay`: re-run the judge over the stored windows of a rollout, and compare with what was decided.

Each judged event stores the seconds it looked at. Replaying judges the same seconds of the same
series again, from the metric store, with the service's current policy; a decision that comes out
differently is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fridaymorning.analysis.judge import judge
from fridaymorning.config import ServiceConfig
from fridaymorning.controller.phases import RolloutState
from fridaymorning.controller.planner import judged_series
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

    @property
    def same(self) -> bool:
        return self.recorded == self.replayed


def replay(
    rollout: RolloutState, events: list[dict[str, Any]], query: Query, service: ServiceConfig
) -> list[ReplayedDecision]:
    """Judge again every event that carries a verdict, over the same seconds and series."""
    series = judged_series(service, rollout)
    decisions = []
    for event in events:
        verdict = event.get("verdict") or {}
        window = verdict.get("window")
        if window is None or not replayable(verdict):
            continue
        start, end = int(window["start"]), int(window["end"])
        canary = query(series.canary_backend, rollout.version, start, end)
        baseline = query(series.baseline_backend, series.baseline_version, start, end)
        replayed = judge(canary, baseline, service.analysis, compare=series.compare)
        decisions.append(
            ReplayedDecision(event["at"], event["kind"], start, end, verdict["phase"], replayed.phase.value)
        )
    return decisions


def replayable(verdict: dict[str, Any]) -> bool:
    """Verdicts from outside the metric store (HAProxy's health view, a failed hook) cannot be replayed."""
    outside = {"canary_health", "rollout_hook"}
    return not any(check["name"] in outside for check in verdict.get("checks", []))
