"""Instances a platform replaced by itself (a Swarm task restarted): paired by server name, and their
HAProxy servers replaced by the controller with the share they had."""

from __future__ import annotations

from pathlib import Path

from fridaymorning.controller.replacements import gone, replaced_pairs, swap
from fridaymorning.models import Instance
from fridaymorning.testing import ControllerHarness, ReplacingFakePlatform, harness_service, wait_for

V1_1 = Instance("v1", 1, "10.0.0.2", 30001, "task-a")
V1_2 = Instance("v1", 2, "10.0.0.6", 30002, "task-b")
V1_2_NEW = Instance("v1", 2, "10.0.0.6", 30009, "task-c")


def test_a_replacement_pairs_by_server_name() -> None:
    """The same server name with another task and port is a replacement; the same instance is not."""
    assert replaced_pairs([V1_1, V1_2], [V1_1, V1_2_NEW]) == [(V1_2, V1_2_NEW)]


def test_a_task_gone_and_not_yet_replaced_pairs_with_nothing() -> None:
    """A task that is gone without a replacement yet is left to HAProxy's checks (it is DOWN there)."""
    assert replaced_pairs([V1_1, V1_2], [V1_1]) == []


def test_gone_lists_the_instances_that_run_under_no_name_any_more() -> None:
    """A task that stopped is gone until its replacement runs; a replaced one is not gone."""
    assert gone([V1_1, V1_2], [V1_1]) == [V1_2]
    assert gone([V1_1, V1_2], [V1_1, V1_2_NEW]) == []


def test_swap_keeps_the_order() -> None:
    """Swapping puts each replacement where its predecessor was."""
    assert swap([V1_1, V1_2], [(V1_2, V1_2_NEW)]) == [V1_1, V1_2_NEW]


async def test_the_controller_replaces_the_server_of_a_replaced_instance(tmp_path: Path) -> None:
    """When the platform replaced a stable instance, its HAProxy server is removed and added again at the
    replacement's address, and the backend's shares are set again (stable keeps 100%)."""
    platform = ReplacingFakePlatform()
    service = harness_service(10, 50).model_copy(
        update={"platform": harness_service(10, 50).platform.model_copy(update={"replicas": 2})}
    )
    harness = ControllerHarness(service, tmp_path / "state.db", platform=platform)
    await harness.controller.start()
    try:
        old = harness.controller.stable_instances[1]
        new = platform.replace(old)
        await wait_for(
            lambda: harness.router.servers["web"][old.server].address == f"{new.host}:{new.port}",
            "the server moved to the replacement",
            timeout_s=30,
        )
        assert harness.router.removed == [old.server]
        assert harness.controller.stable_instances[1] == new
        await wait_for(lambda: harness.router.percents_of("stable")[-1:] == [100], "shares set again")
        assert len(harness.router.share_history) >= 2
    finally:
        await harness.controller.stop()
