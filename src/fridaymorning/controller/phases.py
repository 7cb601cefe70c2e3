"""Phases of a rollout, and the state the controller persists at every transition."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RolloutPhase(StrEnum):
    """Where a rollout is. Persisted at every transition, so a restarted controller knows."""

    STARTING = "starting"  # canary instances are starting and joining the backend at weight 0
    PROGRESSING = "progressing"  # walking the weight steps, judged every interval
    HELD = "held"  # a step ran out of time without enough evidence, or a gate failed: waits for a person
    PAUSED = "paused"  # a person paused the rollout: weights stay; a failing canary is still rolled back
    AWAITING_APPROVAL = "awaiting_approval"  # the step passed; its gate waits for `fm approve`
    PROMOTING = "promoting"  # canary takes all traffic; the old stable drains and stops
    PROMOTED = "promoted"  # the canary is the new stable
    ROLLING_BACK = "rolling_back"  # canary judged bad: at weight 0, draining and stopping
    ABORTING = "aborting"  # a person aborted: canary at weight 0, draining and stopping
    ROLLED_BACK = "rolled_back"  # the canary was judged bad, or never became healthy
    ABORTED = "aborted"  # a person stopped the rollout; the canary was removed


TERMINAL_PHASES = frozenset({RolloutPhase.PROMOTED, RolloutPhase.ROLLED_BACK, RolloutPhase.ABORTED})
ACTIVE_PHASES = frozenset(set(RolloutPhase) - TERMINAL_PHASES)


@dataclass(frozen=True, slots=True)
class RolloutState:
    """A rollout as persisted: one row of the state store."""

    id: int
    service: str
    version: str  # the canary
    baseline: str  # the stable version it is compared with
    phase: RolloutPhase
    step_index: int
    canary_weight: int  # percent of the backend's traffic
    started_at: float
    step_started_at: float
    finished_at: float | None = None
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES
