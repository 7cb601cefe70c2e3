"""next_action and manual_action, as tables: state and verdict in, action out."""

from __future__ import annotations

import pytest

from fridaymorning.analysis.verdict import Verdict, VerdictPhase
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.controller.strategy import ActionKind, Plan, Step, manual_action, next_action
from fridaymorning.errors import RolloutError

PLAN = Plan((Step(10, 30, 300, 100), Step(50, 30, 300, 100)))


def state(phase: RolloutPhase = RolloutPhase.PROGRESSING, step_index: int = 0) -> RolloutState:
    return RolloutState(1, "web", "v2", "v1", phase, step_index, PLAN.steps[step_index].weight, 0.0, 0.0)


def verdict(phase: VerdictPhase) -> Verdict:
    return Verdict(phase, (), f"judged {phase}")


@pytest.mark.parametrize(
    ("step_index", "verdict_phase", "now", "expected", "weight"),
    [
        (0, VerdictPhase.FAIL, 1, ActionKind.ROLLBACK, None),  # a failure acts at once, even while baking
        (0, VerdictPhase.PASS, 10, ActionKind.STAY, None),  # passing but still baking
        (0, VerdictPhase.PASS, 30, ActionKind.ADVANCE, 50),  # baked and passing: next step
        (1, VerdictPhase.PASS, 30, ActionKind.PROMOTE, None),  # last step passed
        (0, VerdictPhase.HOLD, 100, ActionKind.STAY, None),  # not enough evidence yet
        (0, VerdictPhase.HOLD, 300, ActionKind.HOLD, None),  # out of time without evidence: wait for a person
        (0, VerdictPhase.ERROR, 100, ActionKind.STAY, None),  # broken metrics never pass
        (0, VerdictPhase.ERROR, 300, ActionKind.HOLD, None),  # ...and never promote after the max duration
    ],
)
def test_next_action_table(
    step_index: int, verdict_phase: VerdictPhase, now: float, expected: ActionKind, weight: int | None
) -> None:
    """Each (step, verdict, time) gives the documented action."""
    action = next_action(state(step_index=step_index), verdict(verdict_phase), now, PLAN, step_requests=100)
    assert action.kind is expected, action.reason
    assert action.canary_weight == weight


def test_insufficient_evidence_policy_rollback() -> None:
    """With on_insufficient_evidence=rollback, a step that runs out of time rolls back instead of holding."""
    plan = Plan(PLAN.steps, "rollback")
    action = next_action(state(), verdict(VerdictPhase.HOLD), 300, plan, step_requests=0)
    assert action.kind is ActionKind.ROLLBACK
    assert "load-test hook" in action.reason


def test_no_decision_outside_progressing() -> None:
    """A held rollout is not moved by verdicts, only by people."""
    action = next_action(state(RolloutPhase.HELD), verdict(VerdictPhase.PASS), 1000, PLAN, step_requests=500)
    assert action.kind is ActionKind.STAY


@pytest.mark.parametrize(
    ("phase", "command", "expected"),
    [
        (RolloutPhase.PROGRESSING, "promote", ActionKind.PROMOTE),
        (RolloutPhase.HELD, "promote", ActionKind.PROMOTE),
        (RolloutPhase.STARTING, "abort", ActionKind.ABORT),
        (RolloutPhase.PROGRESSING, "abort", ActionKind.ABORT),
        (RolloutPhase.HELD, "abort", ActionKind.ABORT),
    ],
)
def test_manual_commands_allowed(phase: RolloutPhase, command: str, expected: ActionKind) -> None:
    """promote and abort act in the phases where they make sense."""
    assert manual_action(state(phase), command).kind is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("phase", "command"),
    [
        (RolloutPhase.STARTING, "promote"),
        (RolloutPhase.PROMOTED, "abort"),
        (RolloutPhase.ROLLED_BACK, "promote"),
        (RolloutPhase.ROLLING_BACK, "abort"),
    ],
)
def test_manual_commands_refused_with_reason(phase: RolloutPhase, command: str) -> None:
    """A command that makes no sense in the phase is refused, and the reason names the phase."""
    with pytest.raises(RolloutError, match=f"it is {phase.value}"):
        manual_action(state(phase), command)  # type: ignore[arg-type]


def test_step_needs_its_own_minimum_requests() -> None:
    """A passing verdict does not advance a step that has served fewer than its minimum requests."""
    action = next_action(state(), verdict(VerdictPhase.PASS), 60, PLAN, step_requests=99)
    assert action.kind is ActionKind.STAY
    assert "99 of 100 requests" in action.reason
