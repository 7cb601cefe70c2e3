"""Each rollout strategy against a real HAProxy, real instances and the real collector."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.runtime import Runtime
from fridaymorning.testing import EVENT_DEADLINE_S, wait_for

if TYPE_CHECKING:
    from tests.integration.conftest import RuntimeConfig, ServiceSettings, StartRuntime

pytestmark = pytest.mark.haproxy


def frontend_url(runtime: Runtime, service: str = "web") -> str:
    return f"http://{runtime.config.service(service).frontend}/"


async def deploy(runtime: Runtime, version: str, service: str = "web") -> Any:
    controller = runtime.controllers[service]
    controller.deploy(version)
    return await finished(runtime, service)


async def finished(runtime: Runtime, service: str = "web") -> Any:
    """The final state of the service's rollout, within a deadline sized for a busy machine."""
    return await asyncio.wait_for(runtime.controllers[service].wait(), 2 * EVENT_DEADLINE_S)


async def phase_reached(runtime: Runtime, rollout_id: int, phase: RolloutPhase) -> Any:
    """The rollout's state once it is in `phase`."""

    def current() -> Any:
        state = runtime.states.rollout(rollout_id)
        return state if state is not None and state.phase is phase else None

    return await wait_for(current, f"rollout {rollout_id} {phase}")


@pytest.mark.parametrize(
    ("version", "rollback_window_s", "phase", "serving"),
    [("v2", 4, RolloutPhase.PROMOTED, "v2-1"), ("broken2", 30, RolloutPhase.ROLLED_BACK, "v1-1")],
    ids=["good-green-promoted", "bad-green-rolled-back-at-once"],
)
async def test_blue_green(
    runtime_config: RuntimeConfig,
    service_settings: ServiceSettings,
    start_runtime: StartRuntime,
    version: str,
    rollback_window_s: int,
    phase: RolloutPhase,
    serving: str,
) -> None:
    """Blue/green: green takes all traffic at once. A good green passes its window and blue is stopped;
    a failing green gives all traffic back to blue at once. Blue keeps serving without errors."""
    settings = service_settings(strategy="blue_green", blue_green={"rollback_window_s": rollback_window_s})
    runtime = await start_runtime(runtime_config(settings))
    traffic = BackgroundTraffic(frontend_url(runtime), rate=120)
    traffic.start()
    try:
        final = await deploy(runtime, version)
    finally:
        tally = traffic.stop()
    assert final.phase is phase, final.reason
    assert runtime.managed_router is not None
    assert set(await runtime.managed_router.get_weights("web")) == {serving}
    assert tally["v1"]["errors"] == 0
    if phase is RolloutPhase.PROMOTED:
        assert tally[version]["errors"] == 0
    else:
        assert final.finished_at - final.started_at < rollback_window_s, "rolled back only after the window"


async def test_ab_sends_only_matched_requests_to_the_canary(
    runtime_config: RuntimeConfig, service_settings: ServiceSettings, start_runtime: StartRuntime
) -> None:
    """A/B: requests with the header reach the canary, all others stay on stable, until promotion."""
    settings = service_settings(strategy="ab", ab={"header": "X-Canary", "value": "1"})
    runtime = await start_runtime(runtime_config(settings))
    plain = BackgroundTraffic(frontend_url(runtime), rate=100)
    matched = BackgroundTraffic(frontend_url(runtime), rate=60, headers={"X-Canary": "1"})
    plain.start()
    matched.start()
    controller = runtime.controllers["web"]
    try:
        rollout = controller.deploy("v2")
        await phase_reached(runtime, rollout.id, RolloutPhase.PROGRESSING)
        await wait_for(lambda: matched.generator.snapshot().get("v2"), "matched requests answered by v2")
        during = (dict(plain.generator.snapshot()), dict(matched.generator.snapshot()))
        final = await finished(runtime)
    finally:
        plain.stop()
        matched.stop()
    assert final.phase is RolloutPhase.PROMOTED, final.reason
    plain_during, matched_during = during
    assert "v2" not in plain_during
    assert matched_during.get("v2", {}).get("requests", 0) > 0
    async with httpx.AsyncClient() as client:
        assert (await client.get(frontend_url(runtime))).headers["X-Version"] == "v2"


async def test_fresh_baseline_runs_beside_the_canary(
    runtime_config: RuntimeConfig, service_settings: ServiceSettings, start_runtime: StartRuntime
) -> None:
    """With fresh_baseline, new v1 instances serve at the canary's weight, and are gone after promotion."""
    runtime = await start_runtime(runtime_config(service_settings(fresh_baseline=True)))
    traffic = BackgroundTraffic(frontend_url(runtime), rate=150)
    traffic.start()
    controller = runtime.controllers["web"]
    assert runtime.managed_router is not None
    try:
        rollout = controller.deploy("v2")
        await phase_reached(runtime, rollout.id, RolloutPhase.PROGRESSING)
        weights = await runtime.managed_router.get_weights("web")
        final = await finished(runtime)
    finally:
        tally = traffic.stop()
    assert weights["v1__baseline-1"] == weights["v2-1"] > 0
    assert weights["v1-1"] > weights["v2-1"]
    assert final.phase is RolloutPhase.PROMOTED, final.reason
    assert set(await runtime.managed_router.get_weights("web")) == {"v2-1"}
    assert tally["v1"]["errors"] == 0


async def test_affinity_keeps_a_user_on_one_version(
    runtime_config: RuntimeConfig, service_settings: ServiceSettings, start_runtime: StartRuntime
) -> None:
    """With affinity, a client holding the cookie sees one version for every request at 50/50."""
    steps = [{"weight": 50, "min_duration_s": 60, "max_duration_s": 120, "min_requests": 10_000}]
    settings = service_settings(steps=steps, affinity={"cookie": "FMSERVER"})
    runtime = await start_runtime(runtime_config(settings))
    controller = runtime.controllers["web"]
    rollout = controller.deploy("v2")
    await phase_reached(runtime, rollout.id, RolloutPhase.PROGRESSING)
    async with httpx.AsyncClient() as sticky, httpx.AsyncClient() as fresh:
        seen_sticky = {(await sticky.get(frontend_url(runtime))).headers["X-Version"] for _ in range(20)}
        seen_fresh = set()
        for _ in range(20):
            fresh.cookies.clear()
            seen_fresh.add((await fresh.get(frontend_url(runtime))).headers["X-Version"])
    assert len(seen_sticky) == 1
    assert seen_fresh == {"v1", "v2"}
    controller.command(rollout.id, "abort")
    final = await finished(runtime)
    assert final.phase is RolloutPhase.ABORTED


async def test_two_services_roll_out_independently(
    runtime_config: RuntimeConfig, service_settings: ServiceSettings, start_runtime: StartRuntime
) -> None:
    """Two services in one config: a bad rollout of one does not touch the other, which is promoted."""
    runtime = await start_runtime(runtime_config(service_settings("web"), service_settings("api")))
    web = BackgroundTraffic(frontend_url(runtime, "web"), rate=100)
    api = BackgroundTraffic(frontend_url(runtime, "api"), rate=100)
    web.start()
    api.start()
    try:
        results = await asyncio.gather(deploy(runtime, "broken3", "web"), deploy(runtime, "v2", "api"))
    finally:
        web_tally, api_tally = web.stop(), api.stop()
    assert [result.phase for result in results] == [RolloutPhase.ROLLED_BACK, RolloutPhase.PROMOTED]
    assert runtime.controllers["web"].stable_version == "v1"
    assert runtime.controllers["api"].stable_version == "v2"
    assert web_tally["v1"]["errors"] == 0 and "broken3" not in api_tally


async def test_load_test_hook_brings_the_evidence(
    runtime_config: RuntimeConfig, service_settings: ServiceSettings, start_runtime: StartRuntime
) -> None:
    """A service with no traffic of its own is promoted on the traffic its load-test hook generates;
    without the hook, the same rollout holds."""
    hook = {"name": "traffic", "kind": "rollout", "load_test": {"rate_per_s": 150}}
    with_hook = service_settings("web")
    with_hook["hooks"] = [hook]
    quiet = service_settings(
        "api", steps=[{"weight": 50, "min_duration_s": 2, "max_duration_s": 8, "min_requests": 50}]
    )
    runtime = await start_runtime(runtime_config(with_hook, quiet))
    results = await asyncio.gather(deploy(runtime, "v2", "web"), held(runtime, "api"))
    assert results[0].phase is RolloutPhase.PROMOTED, results[0].reason
    assert results[1].phase is RolloutPhase.HELD
    assert "Add a load-test hook" in results[1].reason


async def held(runtime: Runtime, service: str) -> Any:
    """Deploy v2 to a service without traffic and wait until the rollout is held."""
    rollout = runtime.controllers[service].deploy("v2")
    return await phase_reached(runtime, rollout.id, RolloutPhase.HELD)
