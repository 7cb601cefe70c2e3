"""The controller over a fleet with a lagging HAProxy: forward moves hold, rollbacks never wait."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.testing import EVENT_DEADLINE_S, ControllerHarness, harness_service


def make_harness(tmp_path: Path, canary_failure_rate: float = 0.0) -> ControllerHarness:
    return ControllerHarness(harness_service(10, 50), tmp_path / "state.db", canary_failure_rate)


async def test_a_lagging_instance_holds_the_step_and_the_rollout_goes_on_once_it_is_back(
    tmp_path: Path,
) -> None:
    """While an instance lags the rollout stays at its step, naming the instance; then it promotes."""
    harness = make_harness(tmp_path)
    rollout = await harness.start_rollout(seconds=2)
    harness.router.lagging = ("lb2",)
    await harness.drive(30)
    held = harness.states.rollout(rollout.id)
    assert held is not None and held.phase is RolloutPhase.PROGRESSING
    assert held.canary_weight == 10 and held.step_index == 0
    assert "lb2" in held.reason and "lagging" in held.reason
    kinds = [event["kind"] for event in harness.states.events(rollout.id)]
    assert kinds.count("lagging") == 1  # said once, not every judgement
    harness.router.lagging = ()
    await harness.drive(60)
    final = await asyncio.wait_for(harness.controller.wait(), EVENT_DEADLINE_S)
    assert final is not None and final.phase is RolloutPhase.PROMOTED


async def test_a_promotion_needs_every_instance(tmp_path: Path) -> None:
    """The last step passes while an instance lags: no promotion (no 100%) until it is back."""
    harness = make_harness(tmp_path)
    rollout = await harness.start_rollout()
    for _ in range(100):  # until the last step (50%) is reached
        await harness.drive(1)
        state = harness.states.rollout(rollout.id)
        if state is not None and state.canary_weight == 50:
            break
    harness.router.lagging = ("lb3",)
    await harness.drive(60)
    state = harness.states.rollout(rollout.id)
    assert state is not None and state.phase is RolloutPhase.PROGRESSING
    assert 100 not in harness.router.percents_of("canary")
    assert "lb3" in state.reason
    harness.router.lagging = ()
    await harness.drive(30)
    final = await asyncio.wait_for(harness.controller.wait(), EVENT_DEADLINE_S)
    assert final is not None and final.phase is RolloutPhase.PROMOTED


async def test_a_rollback_does_not_wait_for_a_lagging_instance(tmp_path: Path) -> None:
    """A failing canary is rolled back to weight 0 and removed although an instance lags."""
    harness = make_harness(tmp_path, canary_failure_rate=0.2)
    await harness.start_rollout(seconds=1)
    harness.router.lagging = ("lb1",)
    await harness.drive(30)
    final = await asyncio.wait_for(harness.controller.wait(), EVENT_DEADLINE_S)
    assert final is not None and final.phase is RolloutPhase.ROLLED_BACK
    assert harness.router.percents_of("canary")[-1] == 0
    assert harness.router.removed == ["v2-1"]
