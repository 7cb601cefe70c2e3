"""The controller's pure planner: which seconds and which series a rollout is judged on.

With `strategy` (the steps of a rollout, `plan_of`, and the decisions `next_action` and `manual_action`)
this is everything the controller decides without I/O; `fm replay` and the simulator call the same
functions. The loop (`loop.py`) measures and persists; the actuator (`actuator.py`) moves the traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fridaymorning.config import ServiceConfig
from fridaymorning.controller.phases import RolloutState
from fridaymorning.models import baseline_label
from fridaymorning.router import ab_backend


def judged_seconds(state: RolloutState, now: float, data_lag_s: float) -> tuple[int, int]:
    """The closed seconds [start, end) a judgement at `now` looks at: from the rollout's start on."""
    return math.floor(state.started_at) + 1, math.floor(now - data_lag_s)


@dataclass(frozen=True, slots=True)
class Series:
    """The two series a rollout is judged on (where its judge reads canary and baseline), and whether they
    are compared at all."""

    canary_backend: str
    canary_version: str
    baseline_backend: str
    baseline_version: str
    compare: bool


def judged_series(service: ServiceConfig, rollout: RolloutState) -> Series:
    """The series the controller judges for `rollout`, as `fm replay` must read them again."""
    strategy = service.rollout.strategy
    canary_backend = ab_backend(service.name) if strategy == "ab" else service.name
    fresh = service.rollout.fresh_baseline
    baseline_version = baseline_label(rollout.baseline) if fresh else rollout.baseline
    # Blue/green: blue serves nothing once green takes over, so there is nothing to compare with.
    return Series(
        canary_backend, rollout.version, service.name, baseline_version, compare=strategy != "blue_green"
    )
