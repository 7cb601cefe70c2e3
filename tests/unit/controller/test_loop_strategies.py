"""Strategies, gates, hooks and restarts of the controller loop, driven tick by tick on fakes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from fridaymorning.config import NotificationConfig, ServiceConfig
from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.errors import RolloutError
from fridaymorning.testing import EVENT_DEADLINE_S, ControllerHarness, WebhookReceiver, unstarted_service

STEPS = [
    {"weight": 10, "min_duration_s": 5, "max_duration_s": 30, "min_requests": 20},
    {"weight": 40, "min_duration_s": 5, "max_duration_s": 30, "min_requests": 20},
]
FAIL_COMMAND = [sys.executable, "-c", "import sys; sys.exit(3)"]


def service(**rollout: Any) -> ServiceConfig:
    hooks = rollout.pop("hooks", [])
    return ServiceConfig.model_validate(
        unstarted_service(
            rollout={"judge_interval_s": 0.001, "steps": STEPS, **rollout},
            analysis={"min_requests": 20},
            hooks=hooks,
        )
    )


def harness(tmp_path: Path, config: ServiceConfig, failure_rate: float = 0.0) -> ControllerHarness:
    return ControllerHarness(config, tmp_path / "state.db", canary_failure_rate=failure_rate)


async def finish(h: ControllerHarness, seconds: int = 120) -> Any:
    await h.drive(seconds)
    return await asyncio.wait_for(h.controller.wait(), EVENT_DEADLINE_S)


async def test_approval_gate_waits_for_a_person(tmp_path: Path) -> None:
    """A step with approval passes, then waits; `approve` moves the canary to the next step."""
    steps = [dict(STEPS[0], approval=True), STEPS[1]]
    h = harness(tmp_path, service(steps=steps))
    rollout = await h.start_rollout(seconds=40)
    waiting = h.states.rollout(rollout.id)
    assert waiting is not None and waiting.phase is RolloutPhase.AWAITING_APPROVAL
    assert waiting.canary_weight == 10
    h.controller.command(rollout.id, "approve")
    final = await finish(h)
    assert final.phase is RolloutPhase.PROMOTED
    kinds = [event["kind"] for event in h.states.events(rollout.id)]
    assert "awaiting_approval" in kinds


async def test_pause_freezes_weights_but_a_failure_still_rolls_back(tmp_path: Path) -> None:
    """While paused the weight stays put; a canary that starts failing is still rolled back."""
    h = harness(tmp_path, service())
    rollout = await h.start_rollout(seconds=2)
    h.controller.command(rollout.id, "pause")
    await h.drive(40)
    paused = h.states.rollout(rollout.id)
    assert paused is not None and (paused.phase, paused.canary_weight) == (RolloutPhase.PAUSED, 10)
    with pytest.raises(RolloutError, match="cannot approve"):
        h.controller.command(rollout.id, "approve")
    h.canary_failure_rate = 0.5
    final = await finish(h)
    assert final.phase is RolloutPhase.ROLLED_BACK


async def test_resume_restarts_the_step(tmp_path: Path) -> None:
    """`resume` after `pause` puts the rollout back to progressing, and it goes on to promotion."""
    h = harness(tmp_path, service())
    rollout = await h.start_rollout(seconds=2)
    h.controller.command(rollout.id, "pause")
    await h.drive(3)
    h.controller.command(rollout.id, "resume")
    final = await finish(h)
    assert final.phase is RolloutPhase.PROMOTED
    assert "resumed" in [event["kind"] for event in h.states.events(rollout.id)]


async def test_fresh_baseline_gets_the_canary_weight(tmp_path: Path) -> None:
    """With fresh_baseline, new stable instances get the canary's weight, and are removed at the end."""
    h = harness(tmp_path, service(fresh_baseline=True))
    await h.start_rollout(seconds=3)
    assert h.router.share_history[-1] == ("web", {"stable": 80, "baseline": 10, "canary": 10})
    final = await finish(h)
    assert final.phase is RolloutPhase.PROMOTED
    assert {i.server for i in h.platform.running} == {"v2-1"}
    assert set(h.router.servers["web"]) == {"v2-1"}


async def test_ab_routes_matched_traffic_to_its_own_backend(tmp_path: Path) -> None:
    """A/B: the canary lives in the web__ab backend until promotion, then takes over the main backend."""
    h = harness(tmp_path, service(strategy="ab", ab={"header": "X-Canary", "value": "1"}))
    await h.start_rollout(seconds=3)
    assert set(h.router.servers["web__ab"]) == {"v2-1"}
    assert set(h.router.servers["web"]) == {"v1-1"}
    assert h.router.share_history[-2:] == [
        ("web__ab", {"canary": 100}),
        ("web", {"stable": 100, "baseline": 0, "canary": 0}),
    ]
    final = await finish(h)
    assert final.phase is RolloutPhase.PROMOTED
    assert set(h.router.servers["web"]) == {"v2-1"}
    assert h.router.servers["web__ab"] == {}


async def test_blue_green_rolls_back_instantly(tmp_path: Path) -> None:
    """Blue/green switches 100% to green at once; a failing green gives all traffic back to blue."""
    h = harness(
        tmp_path, service(strategy="blue_green", blue_green={"rollback_window_s": 30}), failure_rate=0.5
    )
    await h.start_rollout(seconds=1)
    assert h.router.share_history[1] == ("web", {"stable": 0, "baseline": 0, "canary": 100})  # [0]: stable
    final = await finish(h)
    assert final.phase is RolloutPhase.ROLLED_BACK
    assert h.router.share_history[-1] == ("web", {"stable": 100, "baseline": 0, "canary": 0})
    assert {i.server for i in h.platform.running} == {"v1-1"}


@pytest.mark.parametrize("at_phase", ["progressing", "promoting", "rolling_back", "starting"])
async def test_restart_resumes_in_every_phase(tmp_path: Path, at_phase: str) -> None:
    """A controller killed in any phase is replaced by one that adopts the instances and finishes."""
    h = harness(tmp_path, service())
    rollout = await h.start_rollout(seconds=3)
    state = h.states.rollout(rollout.id)
    assert state is not None
    if at_phase != "progressing":
        state = h.states.transition(state, h.clock(), "forced", "test", phase=RolloutPhase(at_phase))
    await h.restart()
    final = await finish(h)
    expected = RolloutPhase.ROLLED_BACK if at_phase == "rolling_back" else RolloutPhase.PROMOTED
    assert final.phase is expected
    assert "resumed" in [event["kind"] for event in h.states.events(rollout.id)]
    survivor = "v1" if expected is RolloutPhase.ROLLED_BACK else "v2"
    assert [instance.version for instance in h.platform.running] == [survivor]


async def test_retry_deploys_the_same_version_again(tmp_path: Path) -> None:
    """After a rollback, `retry` starts a new rollout of the same version; a running one cannot be retried."""
    h = harness(tmp_path, service(), failure_rate=0.5)
    first = await h.start_rollout()
    assert (await finish(h)).phase is RolloutPhase.ROLLED_BACK
    h.canary_failure_rate = 0.0
    second = h.controller.retry(first.id)
    assert second.version == "v2" and second.id != first.id
    with pytest.raises(RolloutError, match="cannot retry"):
        h.controller.retry(second.id)
    assert (await finish(h)).phase is RolloutPhase.PROMOTED


@pytest.mark.parametrize(
    ("kind", "expected", "reason"),
    [
        ("pre_rollout", RolloutPhase.ABORTED, "pre-rollout hook failed"),
        ("rollout", RolloutPhase.ROLLED_BACK, "rollout_hook"),
        ("confirm_promotion", RolloutPhase.HELD, "promotion not confirmed"),
    ],
)
async def test_failing_hooks(tmp_path: Path, kind: str, expected: RolloutPhase, reason: str) -> None:
    """A failing pre-rollout hook aborts before traffic, a rollout hook rolls back, a confirm gate holds."""
    hook = {"name": "check", "kind": kind, "command": FAIL_COMMAND, "retries": 0}
    h = harness(tmp_path, service(hooks=[hook]))
    rollout = await h.start_rollout(seconds=60)
    state = h.states.rollout(rollout.id)
    assert state is not None and state.phase is expected, state
    assert reason in state.reason and "exit status 3" in state.reason
    if kind == "pre_rollout":
        assert set(h.router.percents_of("canary")) == {0}
    await h.controller.stop()


async def test_notifications_follow_the_rollout(tmp_path: Path) -> None:
    """A webhook receives started, each step, and promoted, in order, with the rollout's explanation."""
    receiver = WebhookReceiver()
    try:
        config = service()
        config = config.model_copy(
            update={"notifications": [NotificationConfig(url=receiver.url, format="generic")]}
        )
        h = harness(tmp_path, config)
        await h.start_rollout()
        assert (await finish(h)).phase is RolloutPhase.PROMOTED
        await h.controller.stop()  # waits for notifications still in flight
    finally:
        receiver.close()
    kinds = [post["event"] for post in receiver.posts]
    assert kinds == ["started", "step", "step", "promoted"]
    assert receiver.posts[-1]["version"] == "v2" and receiver.posts[-1]["reason"] == "all 2 steps passed"
