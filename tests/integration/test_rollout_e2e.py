"""End to end against a real HAProxy: a canary answering 500 is rolled back, and the per-server
request counts from the logs equal HAProxy's own `show stat` totals."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.runtime import Runtime
from fridaymorning.testing import EVENT_DEADLINE_S, wait_for

if TYPE_CHECKING:
    from tests.integration.conftest import RuntimeConfig, StartRuntime

pytestmark = pytest.mark.haproxy


@pytest.fixture
async def runtime(runtime_config: RuntimeConfig, start_runtime: StartRuntime) -> Runtime:
    return await start_runtime(runtime_config())


async def test_canary_answering_500_is_rolled_back(runtime: Runtime) -> None:
    """Every canary request fails: the rollout ends rolled back, the canary server is gone from HAProxy,
    and the stable version served no error."""
    traffic = BackgroundTraffic(f"http://{runtime.config.services[0].frontend}/", rate=100)
    traffic.start()
    try:
        controller = runtime.controllers["web"]
        controller.deploy("broken1")
        final = await asyncio.wait_for(controller.wait(), timeout=2 * EVENT_DEADLINE_S)
    finally:
        tally = traffic.stop()
    assert final is not None and final.phase is RolloutPhase.ROLLED_BACK, final
    assert final.reason.startswith(("error_rate_vs_baseline", "error_rate_slo")), final.reason
    assert runtime.managed_router is not None
    assert set(await runtime.managed_router.get_weights("web")) == {"v1-1"}
    assert tally["broken1"]["errors"] > 0
    assert tally["v1"]["errors"] == 0


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
async def test_logged_requests_equal_haproxy_counters(
    runtime_config: RuntimeConfig, start_runtime: StartRuntime, protocol: str
) -> None:
    """The requests the collector counted per server from HAProxy's logs, by UDP or through a ring
    over TCP, equal `show stat`'s totals."""
    config = runtime_config()
    config.collector.protocol = protocol  # type: ignore[assignment]
    runtime = await start_runtime(config)
    traffic = BackgroundTraffic(f"http://{runtime.config.services[0].frontend}/", rate=200)
    traffic.generator.max_requests = 600
    traffic.start()
    await wait_for(lambda: answered(traffic) == 600, "600 requests answered", interval_s=0.2)
    traffic.stop()
    assert runtime.router is not None and runtime.metrics is not None
    metrics = runtime.metrics

    def logged() -> dict[str, int]:
        totals = metrics.totals("web", 0, 2**31)  # type: ignore[attr-defined]
        return {version: counts["requests"] for version, counts in totals.items()}

    await wait_for(lambda: logged() == {"v1": 600}, "600 requests logged and flushed", interval_s=0.2)
    states = {state.server: state.total_requests for state in await runtime.router.server_states("web")}
    assert states == {"v1-1": 600}


def answered(traffic: BackgroundTraffic) -> int:
    return sum(counts["requests"] for counts in traffic.generator.snapshot().values())
