"""The controller's decisions, as pure functions: (state, verdict, now) → Action. No I/O here.

The loop measures, calls `next_action`, then acts and persists. Manual commands go through
`manual_action`, which refuses, with a reason, what makes no sense in the current phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from fridaymorning.analysis.verdict import Verdict, VerdictPhase
from fridaymorning.config import ServiceConfig
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.errors import RolloutError


@dataclass(frozen=True, slots=True)
class Step:
    """One rollout step: canary weight (percent), how long to stay, requests needed, and its gate."""

    weight: int
    min_duration_s: float
    max_duration_s: float
    min_requests: int
    approval: bool = False  # after passing, wait for `fm approve` before moving on


@dataclass(frozen=True, slots=True)
class Plan:
    """The steps of a rollout and what to do when a step runs out of time without evidence."""

    steps: tuple[Step, ...]
    on_insufficient_evidence: Literal["hold", "rollback"] = "hold"


def plan_of(service: ServiceConfig) -> Plan:
    """The pure strategy's view of a service's rollout config.

    Blue/green is one step at 100%: the rollback window, judged like any step.
    """
    rollout = service.rollout
    if rollout.strategy == "blue_green":
        first = rollout.steps[0]
        window = rollout.blue_green.rollback_window_s
        step = Step(100, window, max(window, first.max_duration_s), first.min_requests)
        return Plan((step,), rollout.on_insufficient_evidence)
    steps = tuple(
        Step(step.weight, step.min_duration_s, step.max_duration_s, step.min_requests, step.approval)
        for step in rollout.steps
    )
    return Plan(steps, rollout.on_insufficient_evidence)


class ActionKind(StrEnum):
    """What the loop must do after a decision."""

    STAY = "stay"  # keep the current weight and judge again next interval
    ADVANCE = "advance"  # move to the next step's weight
    PROMOTE = "promote"  # the canary becomes stable
    ROLLBACK = "rollback"  # the canary is bad: weight 0 at once, then remove it
    HOLD = "hold"  # stop progressing and wait for a person
    AWAIT_APPROVAL = "await_approval"  # the step passed; its gate waits for a person
    PAUSE = "pause"  # a person paused the rollout
    RESUME = "resume"  # a person resumed it: the current step starts over
    ABORT = "abort"  # a person stopped the rollout: remove the canary


@dataclass(frozen=True, slots=True)
class Action:
    """A decision of the controller, with the reason shown to people."""

    kind: ActionKind
    reason: str
    step_index: int | None = None
    canary_weight: int | None = None


# Phases in which the judge keeps watching, so that a failing canary is rolled back even while a
# person holds, pauses or has not yet approved the rollout.
WATCHED_PHASES = frozenset(
    {RolloutPhase.PROGRESSING, RolloutPhase.HELD, RolloutPhase.PAUSED, RolloutPhase.AWAITING_APPROVAL}
)


def next_action(state: RolloutState, verdict: Verdict, now: float, plan: Plan, step_requests: int) -> Action:
    """Decide what to do with a rollout.

    `verdict` judges the canary on everything since the rollout began; `step_requests` counts the
    canary requests of the current step alone. A step is done when the verdict passes, it has baked
    for its minimum duration, and it has served its minimum number of requests. A failing verdict
    rolls back in every watched phase; only PROGRESSING moves forward on its own.
    """
    if state.phase not in WATCHED_PHASES:
        return Action(ActionKind.STAY, f"nothing to decide in phase {state.phase}")
    if verdict.phase is VerdictPhase.FAIL:
        return Action(ActionKind.ROLLBACK, verdict.reason)
    if state.phase is not RolloutPhase.PROGRESSING:
        return Action(ActionKind.STAY, f"{state.phase}: waiting for a person")
    step = plan.steps[state.step_index]
    elapsed = now - state.step_started_at
    step_done = elapsed >= step.min_duration_s and step_requests >= step.min_requests
    if verdict.phase is VerdictPhase.PASS and step_done:
        if step.approval:
            return Action(
                ActionKind.AWAIT_APPROVAL, f"step {state.step_index + 1} passed; waiting for approval"
            )
        return advance_or_promote(state.step_index, plan)
    if elapsed >= step.max_duration_s:
        return out_of_time(state.step_index, step, verdict, step_requests, plan)
    if verdict.phase is VerdictPhase.PASS:
        return Action(
            ActionKind.STAY,
            f"baking: {elapsed:.0f} of {step.min_duration_s:.0f} s, "
            f"{step_requests} of {step.min_requests} requests in this step",
        )
    return Action(ActionKind.STAY, verdict.reason)


def advance_or_promote(step_index: int, plan: Plan, who: str = "") -> Action:
    """After a passed step: the next step's weight, or promotion after the last one."""
    if step_index + 1 >= len(plan.steps):
        return Action(ActionKind.PROMOTE, who or f"all {len(plan.steps)} steps passed")
    following = plan.steps[step_index + 1]
    return Action(
        ActionKind.ADVANCE,
        who or f"step {step_index + 1} passed; canary to {following.weight}%",
        step_index=step_index + 1,
        canary_weight=following.weight,
    )


def out_of_time(step_index: int, step: Step, verdict: Verdict, step_requests: int, plan: Plan) -> Action:
    """A step reached its maximum duration without a pass: hold for a person, or roll back by policy."""
    reason = (
        f"step {step_index + 1} reached its maximum of {step.max_duration_s:.0f} s without enough "
        f"evidence ({verdict.reason}; {step_requests} of {step.min_requests} requests in this step). "
        "Too little traffic? Add a load-test hook, or decide by hand with `fm promote` or `fm abort`."
    )
    if plan.on_insufficient_evidence == "rollback":
        return Action(ActionKind.ROLLBACK, reason)
    return Action(ActionKind.HOLD, reason)


ManualCommand = Literal["promote", "promote_full", "abort", "approve", "pause", "resume"]

_WAITING = frozenset(
    {RolloutPhase.PROGRESSING, RolloutPhase.HELD, RolloutPhase.PAUSED, RolloutPhase.AWAITING_APPROVAL}
)

ALLOWED_COMMANDS: dict[ManualCommand, frozenset[RolloutPhase]] = {
    "promote": _WAITING,
    "promote_full": _WAITING,
    "abort": _WAITING | {RolloutPhase.STARTING},
    "approve": frozenset({RolloutPhase.AWAITING_APPROVAL}),
    "pause": frozenset({RolloutPhase.PROGRESSING}),
    "resume": frozenset({RolloutPhase.PAUSED, RolloutPhase.HELD}),
}


def manual_action(state: RolloutState, command: ManualCommand, plan: Plan | None = None) -> Action:
    """The action for a person's command, or RolloutError saying why it makes no sense now.

    `promote` skips the rest of the current step (the next step, or promotion after the last one);
    `promote_full` promotes at once. `plan` is needed for `promote` and `approve`.
    """
    allowed = ALLOWED_COMMANDS[command]
    if state.phase not in allowed:
        phases = ", ".join(sorted(allowed))
        raise RolloutError(
            f"cannot {command.replace('_', ' ')} rollout {state.id} of {state.service}: it is {state.phase} "
            f"(allowed only while {phases})"
        )
    match command:
        case "promote" if plan is not None:
            return advance_or_promote(state.step_index, plan, who="promoted by hand")
        case "promote" | "promote_full":
            return Action(ActionKind.PROMOTE, "promoted by hand")
        case "approve" if plan is not None:
            return advance_or_promote(state.step_index, plan, who=f"step {state.step_index + 1} approved")
        case "approve":
            return Action(ActionKind.PROMOTE, "approved")
        case "pause":
            return Action(ActionKind.PAUSE, "paused by hand")
        case "resume":
            return Action(ActionKind.RESUME, f"resumed by hand; step {state.step_index + 1} starts over")
    return Action(ActionKind.ABORT, "aborted by hand")
