"""The controller loop with fakes: weights move step by step, bad canaries are removed, state persists."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.errors import RolloutError, StoreError
from fridaymorning.testing import (
    EVENT_DEADLINE_S,
    ControllerHarness,
    FakeNotifier,
    FakePlatform,
    harness_service,
)


def make_harness(
    tmp_path: Path,
    canary_failure_rate: float = 0.0,
    platform: FakePlatform | None = None,
    notifier: FakeNotifier | None = None,
) -> ControllerHarness:
    return ControllerHarness(
        harness_service(10, 50), tmp_path / "state.db", canary_failure_rate, platform, notifier=notifier
    )


async def test_good_canary_walks_the_steps_and_is_promoted(tmp_path: Path) -> None:
    """A healthy canary goes 0 → 10% → 50% → 100%, then the old stable is removed and stopped."""
    harness = make_harness(tmp_path)
    await harness.start_rollout(seconds=60)
    final = await asyncio.wait_for(harness.controller.wait(), EVENT_DEADLINE_S)
    assert final is not None and final.phase is RolloutPhase.PROMOTED
    assert harness.router.percents_of("canary") == [0, 10, 50, 100]  # stable alone, then each step
    assert harness.router.removed == ["v1-1"]
    assert [i.version for i in harness.platform.running] == ["v2"]
    assert harness.states.stable_version("web", "v1") == "v2"
    assert harness.controller.stable_version == "v2"


async def test_failing_canary_is_rolled_back_to_weight_zero(tmp_path: Path) -> None:
    """A canary failing 20% of requests is set to weight 0, removed and stopped; stable keeps serving."""
    harness = make_harness(tmp_path, canary_failure_rate=0.2)
    await harness.start_rollout(seconds=30)
    final = await asyncio.wait_for(harness.controller.wait(), EVENT_DEADLINE_S)
    assert final is not None and final.phase is RolloutPhase.ROLLED_BACK
    assert "error_rate" in final.reason
    assert harness.router.percents_of("canary")[-1] == 0
    assert harness.router.removed == ["v2-1"]
    assert [i.version for i in harness.platform.running] == ["v1"]
    assert harness.states.stable_version("web", "v1") == "v1"


async def test_rollback_retries_until_haproxy_takes_weight_zero(tmp_path: Path) -> None:
    """A rollback whose weight change times out is retried until it holds: no canary is left serving."""
    harness = make_harness(tmp_path, canary_failure_rate=0.2)
    await harness.start_rollout(seconds=1)
    harness.router.failing_set_shares = 3
    await harness.drive(30)
    final = await asyncio.wait_for(harness.controller.wait(), EVENT_DEADLINE_S)
    assert final is not None and final.phase is RolloutPhase.ROLLED_BACK
    assert harness.router.failing_set_shares == 0
    assert harness.router.percents_of("canary")[-1] == 0
    assert harness.router.removed == ["v2-1"]
    assert [i.version for i in harness.platform.running] == ["v1"]


async def test_no_traffic_holds_and_never_promotes(tmp_path: Path) -> None:
    """Without any data the rollout holds after the step's maximum duration; it is never promoted."""
    harness = make_harness(tmp_path)
    rollout = await harness.start_rollout(seconds=40, traffic=False)
    held = harness.states.rollout(rollout.id)
    assert held is not None and held.phase is RolloutPhase.HELD
    assert "maximum of 20 s" in held.reason
    harness.controller.command(rollout.id, "abort")
    final = await asyncio.wait_for(harness.controller.wait(), EVENT_DEADLINE_S)
    assert final is not None and final.phase is RolloutPhase.ABORTED


async def test_broken_metric_store_never_promotes(tmp_path: Path) -> None:
    """A store that fails every query gives error verdicts: the rollout holds instead of passing."""
    harness = make_harness(tmp_path)
    harness.metrics.fail_with = StoreError("disk full")
    rollout = await harness.start_rollout(seconds=40)
    held = harness.states.rollout(rollout.id)
    assert held is not None and held.phase is RolloutPhase.HELD
    assert "disk full" in held.reason
    await harness.controller.stop()


async def test_canary_that_never_starts_is_rolled_back(tmp_path: Path) -> None:
    """A canary whose instances fail to start ends rolled back with the platform's reason."""
    harness = make_harness(tmp_path, platform=FakePlatform(fail_versions=["v2"]))
    await harness.start_rollout()
    final = await asyncio.wait_for(harness.controller.wait(), EVENT_DEADLINE_S)
    assert final is not None and final.phase is RolloutPhase.ROLLED_BACK
    assert "did not start" in final.reason


async def test_deploy_refusals(tmp_path: Path) -> None:
    """Deploying the stable version, a malformed version, or during another rollout is refused."""
    harness = make_harness(tmp_path)
    await harness.controller.start()
    with pytest.raises(RolloutError, match="already the stable"):
        harness.controller.deploy("v1")
    with pytest.raises(RolloutError, match="must start with"):
        harness.controller.deploy("v2; rm -rf /")
    harness.controller.deploy("v2")
    with pytest.raises(RolloutError, match="still"):
        harness.controller.deploy("v3")
    await harness.controller.stop()


async def test_manual_promote_skips_remaining_steps(tmp_path: Path) -> None:
    """`fm promote --full` during step 1 promotes at once; promoting a finished rollout is refused."""
    harness = make_harness(tmp_path)
    rollout = await harness.start_rollout(seconds=2)
    harness.controller.command(rollout.id, "promote_full")
    final = await asyncio.wait_for(harness.controller.wait(), EVENT_DEADLINE_S)
    assert final is not None and final.phase is RolloutPhase.PROMOTED
    with pytest.raises(RolloutError, match="it is promoted"):
        harness.controller.command(rollout.id, "promote")


async def test_manual_promote_moves_one_step(tmp_path: Path) -> None:
    """`fm promote` during step 1 moves the canary to step 2's weight without waiting for evidence."""
    harness = make_harness(tmp_path)
    rollout = await harness.start_rollout(seconds=2)
    harness.controller.command(rollout.id, "promote")
    # one virtual second at a time until the command is acted on (a busy machine runs the loop late);
    # checked after each second, so the rollout cannot pass step 2 unseen
    for _ in range(60):
        await harness.drive(1)
        current = harness.states.rollout(rollout.id)
        if current is not None and current.step_index > 0:
            break
    assert current is not None and (current.step_index, current.canary_weight) == (1, 50)
    assert current.reason == "promoted by hand"
    await harness.controller.stop()


async def test_dead_canary_server_is_rolled_back(tmp_path: Path) -> None:
    """A canary server that HAProxy reports DOWN mid-step triggers a rollback."""
    harness = make_harness(tmp_path)
    await harness.start_rollout(seconds=2)
    harness.router.down.add("v2-1")
    await harness.drive(3)
    final = await asyncio.wait_for(harness.controller.wait(), EVENT_DEADLINE_S)
    assert final is not None and final.phase is RolloutPhase.ROLLED_BACK
    assert "down" in final.reason


async def test_each_transition_is_notified_in_order(tmp_path: Path) -> None:
    """The controller hands its notifier one event per transition, in the order they happened, each
    naming the rollout and its weight at that moment."""
    notifier = FakeNotifier()
    harness = make_harness(tmp_path, notifier=notifier)
    await harness.start_rollout(seconds=60)
    final = await asyncio.wait_for(harness.controller.wait(), EVENT_DEADLINE_S)
    assert final is not None and final.phase is RolloutPhase.PROMOTED
    assert notifier.kinds == ["started", "step", "step", "promoted"]
    assert [(event["step"], event["canary_weight"]) for event in notifier.events] == [
        (1, 0),
        (1, 10),
        (2, 50),
        (2, 100),
    ]
    assert {(event["service"], event["version"], event["baseline"]) for event in notifier.events} == {
        ("web", "v2", "v1")
    }


async def test_a_rollback_is_notified_with_the_failing_check(tmp_path: Path) -> None:
    """A rolled-back canary's last notification is "rolled_back", explained by the check that failed."""
    notifier = FakeNotifier()
    harness = make_harness(tmp_path, canary_failure_rate=0.2, notifier=notifier)
    await harness.start_rollout(seconds=30)
    final = await asyncio.wait_for(harness.controller.wait(), EVENT_DEADLINE_S)
    assert final is not None and final.phase is RolloutPhase.ROLLED_BACK
    assert notifier.kinds[0] == "started"
    assert notifier.kinds[-1] == "rolled_back"
    assert "error_rate" in notifier.events[-1]["explanation"]
    assert harness.controller.snapshot()["notifications"]["sent"] == len(notifier.events)
