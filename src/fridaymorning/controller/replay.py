"""`fm replay`: re-run the judge over the stored windows of a rollout, and compare with what was decided.

Each judged event stores the seconds it looked at. Replaying judges the same seconds again, from the
metric store, with the service's current policy; a decision that comes out differently is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fridaymorning.analysis.judge import judge
from fridaymorning.analysis.policy import Policy
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

    @property
    def same(self) -> bool:
        return self.recorded == self.replayed


def replay(
    rollout: RolloutState, events: list[dict[str, Any]], query: Query, policy: Policy
) -> list[ReplayedDecision]:
    """Judge again every event that carries a verdict over a data window."""
    decisions = []
    for event in events:
        verdict = event.get("verdict") or {}
        window = verdict.get("window")
        if window is None or any(check["name"] == "canary_health" for check in verdict.get("checks", [])):
            continue  # HAProxy's health view is not in the metric store: nothing to replay
        start, end = int(window["start"]), int(window["end"])
        canary = query(rollout.service, rollout.version, start, end)
        baseline = query(rollout.service, rollout.baseline, start, end)
        replayed = judge(canary, baseline, policy)
        decisions.append(
            ReplayedDecision(event["at"], event["kind"], start, end, verdict["phase"], replayed.phase.value)
        )
    return decisions
