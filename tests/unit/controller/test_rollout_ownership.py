"""What belongs to which rollout: a verdict to the rollout it judged, the stable version to the state
store once promoted, and an orderly stop ends the running rollout instead of leaving it to resume."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from fridaymorning.controller.loop import STOPPED_BY_OPERATOR
from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.testing import EVENT_DEADLINE_S, ControllerHarness, harness_service


async def drive_until(
    harness: ControllerHarness, condition: Callable[[], object], traffic: bool = True, limit: int = 200
) -> None:
    """Drive virtual seconds one by one until `condition()` holds (a busy machine runs the loop late)."""
    for _ in range(limit):
        if condition():
            return
        await harness.drive(1, traffic=traffic)
    raise AssertionError(f"not within {limit} driven seconds")


async def test_status_shows_no_verdict_for_a_rollout_not_yet_judged(tmp_path: Path) -> None:
    """Right after a deploy, the snapshot (`fm status`, GET /api/v1/status) has no verdict: the previous
    rollout's last verdict is not shown as the new one's."""
    harness = ControllerHarness(harness_service(10), tmp_path / "state.db")
    controller = harness.controller
    await controller.start()
    controller.deploy("v2")
    await harness.drive(60)
    first = await asyncio.wait_for(controller.wait(), EVENT_DEADLINE_S)
    assert first is not None and first.phase is RolloutPhase.PROMOTED
    assert controller.last_verdict is not None  # the first rollout was judged

    second = controller.deploy("v3")
    snapshot = controller.snapshot()  # before the new rollout's first judgement
    assert snapshot["rollout"] is not None and snapshot["rollout"]["id"] == second.id
    assert snapshot["verdict"] is None
    await drive_until(harness, lambda: controller.snapshot()["verdict"] is not None)
    judged = controller.snapshot()["verdict"]
    assert judged is not None and judged["phase"] == "hold"
    await controller.stop()


async def test_each_rollout_records_its_own_first_verdict(tmp_path: Path) -> None:
    """Two rollouts without traffic in a row: the second records its own first verdict (hold), even
    though the first rollout's last verdict had the same phase."""
    harness = ControllerHarness(harness_service(10), tmp_path / "state.db")
    controller = harness.controller
    await controller.start()
    for version in ("v2", "v3"):
        rollout = controller.deploy(version)

        def judged(rollout_id: int = rollout.id) -> bool:
            return "verdict" in [event["kind"] for event in harness.states.events(rollout_id)]

        await drive_until(harness, judged, traffic=False)
        controller.command(rollout.id, "abort")
        final = await asyncio.wait_for(controller.wait(), EVENT_DEADLINE_S)
        assert final is not None and final.phase is RolloutPhase.ABORTED
    await controller.stop()


async def test_orderly_stop_aborts_the_running_rollout(tmp_path: Path) -> None:
    """Stopping the controller mid-rollout aborts it "stopped by the operator": recorded in the state
    store, canary removed, and a new controller on the same store resumes nothing."""
    harness = ControllerHarness(harness_service(10), tmp_path / "state.db")
    rollout = await harness.start_rollout()
    await drive_until(harness, lambda: harness.controller.last_verdict_rollout == rollout.id)
    assert harness.states.rollout(rollout.id).phase is RolloutPhase.PROGRESSING  # type: ignore[union-attr]
    await harness.controller.stop()
    stopped = harness.states.rollout(rollout.id)
    assert stopped is not None and stopped.phase is RolloutPhase.ABORTED
    assert stopped.reason == STOPPED_BY_OPERATOR and stopped.finished_at is not None
    assert harness.platform.running == []
    assert harness.states.active_rollout("web") is None
    await harness.restart()
    assert harness.states.active_rollout("web") is None
    assert "resumed" not in [event["kind"] for event in harness.states.events(rollout.id)]
    assert harness.controller.snapshot()["rollout"] is None
    await harness.controller.stop()


async def test_orderly_stop_before_the_canary_is_in_haproxy_ends_at_once(tmp_path: Path) -> None:
    """A stop that comes after the canary's instances started but before HAProxy holds their servers
    aborts the rollout and stops them: "No such server" is not retried for ever."""
    harness = ControllerHarness(harness_service(10), tmp_path / "state.db")
    never = asyncio.Event()

    async def add_server_stuck(*_: object, **__: object) -> None:
        await never.wait()  # HAProxy never gets to add the canary's server

    await harness.controller.start()
    stable_instances = list(harness.platform.running)
    assert stable_instances
    harness.router.add_server = add_server_stuck  # type: ignore[method-assign]
    rollout = harness.controller.deploy("v2")
    for _ in range(200):  # until the canary's instances run
        if len(harness.platform.running) > len(stable_instances):
            break
        await asyncio.sleep(0.05)
    await asyncio.wait_for(harness.controller.stop(), 30)
    stopped = harness.states.rollout(rollout.id)
    assert stopped is not None and stopped.phase is RolloutPhase.ABORTED
    canaries = [instance for instance in harness.platform.stopped if instance.version == "v2"]
    assert canaries and not [instance for instance in harness.platform.running if instance.version == "v2"]


async def test_stable_from_the_store_wins_and_snapshot_names_the_config_one(tmp_path: Path) -> None:
    """After a promotion a new controller uses the store's stable version, and its snapshot carries the
    config's `stable:` too, so `fm status` can say which one wins."""
    harness = ControllerHarness(harness_service(10), tmp_path / "state.db")
    await harness.start_rollout(seconds=60)
    await asyncio.wait_for(harness.controller.wait(), EVENT_DEADLINE_S)
    await harness.restart()
    snapshot = harness.controller.snapshot()
    assert (snapshot["stable"], snapshot["config_stable"]) == ("v2", "v1")
    await harness.controller.stop()
