"""Loss accounting against a real HAProxy 2.6 under wrk load: the reconciliation of logged requests
with HAProxy's per-server counters finds nothing missing, and finds the requests that were not logged.

One HAProxy: `fe_logged` logs every request (compact format) to the UDP collector; `fe_quiet` sends
to the same backend but logs nothing, standing in for lines lost on the way. Both frontends balance
over two "instances" that are HAProxy `http-request return` frontends.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import pytest

from fridaymorning.ingest.accounting import Reconciler
from fridaymorning.testing import LoggingHAProxy, wait_for

pytestmark = [pytest.mark.haproxy, pytest.mark.slow, pytest.mark.timeout(600)]

# How long after an interval its lines may still arrive: generous, for a collector starved of CPU.
SETTLE_S = 10.0


@pytest.fixture
async def setup(logging_haproxy: Callable[..., Awaitable[LoggingHAProxy]]) -> LoggingHAProxy:
    """`fe_logged` logs every request to the collector, `fe_quiet` none; both reach the same servers."""
    return await logging_haproxy(logged=("fe_logged",), quiet=("fe_quiet",))


async def start_load(wrk: str, port: int) -> asyncio.subprocess.Process:
    """wrk against a loopback frontend until SIGINT (its duration is only a backstop)."""
    return await asyncio.create_subprocess_exec(
        wrk,
        "-t1",
        "-c10",
        "-d600s",
        f"http://127.0.0.1:{port}/",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def reconcile_under_load(
    setup: LoggingHAProxy, wrk: str, quiet_requests: bool
) -> tuple[object, Reconciler]:
    """Snapshots taken while wrk runs (so each second boundary has traffic), then one reconciliation.

    wrk runs until the reconciliation is done, however long the snapshots take on a busy machine, and
    lines get SETTLE_S to arrive: a collector starved of CPU parses late, but it does parse."""
    reconciler = Reconciler(setup.router, setup.collector, settle_s=SETTLE_S, backends={"app"})
    ports = (
        [setup.ports["fe_logged"], setup.ports["fe_quiet"]] if quiet_requests else [setup.ports["fe_logged"]]
    )
    loads = [await start_load(wrk, port) for port in ports]
    try:
        await wait_for(lambda: setup.collector.stats()["requests"] > 0, "logged requests")
        first = await reconciler.snapshot()
        await asyncio.sleep(1.0)  # the interval reconciled: at least one second of traffic
        last = await reconciler.snapshot()
        result = await reconciler.check(first, last)
    finally:
        for process in loads:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
            await process.wait()
    return result, reconciler


async def test_reconciliation_finds_no_mismatch_under_load(setup: LoggingHAProxy, wrk_binary: str) -> None:
    """With every request logged, the lines per server equal the growth of HAProxy's `stot` between
    two bracketing snapshots taken under wrk load, and the collector lost nothing."""
    result, reconciler = await reconcile_under_load(setup, wrk_binary, quiet_requests=False)
    assert result.mismatches == [], result.to_dict()  # type: ignore[attr-defined]
    assert result.logged > 0  # type: ignore[attr-defined]  # however slow the machine, traffic was judged
    stats = setup.collector.stats()
    assert (stats["rejected"], stats["socket_drops"]) == (0, 0)
    assert reconciler.stats()["mismatched_intervals"] == 0


async def test_reconciliation_reports_requests_that_were_not_logged(
    setup: LoggingHAProxy, wrk_binary: str
) -> None:
    """Requests through the frontend that logs nothing count in `stot` but have no line: each server
    of the backend is reported with its missing lines."""
    result, reconciler = await reconcile_under_load(setup, wrk_binary, quiet_requests=True)
    mismatches = result.mismatches  # type: ignore[attr-defined]
    assert {(item.backend, item.server) for item in mismatches} == {("app", "v1-1"), ("app", "v1-2")}
    assert all(item.missing > 0 for item in mismatches)
    assert reconciler.stats()["missing_lines"] == sum(item.missing for item in mismatches)


async def test_watch_haproxy_reports_dropped_logs_in_stats(setup: LoggingHAProxy) -> None:
    """Once the collector watches HAProxy, `stats()` carries DroppedLogs growth and reconciliation."""
    setup.collector.watch_haproxy(setup.router, reconcile_interval_s=60.0, dropped_logs_interval_s=0.1)
    await wait_for(lambda: setup.collector.stats()["haproxy_dropped_logs"] is not None, "a DroppedLogs poll")
    stats = setup.collector.stats()
    assert stats["haproxy_dropped_logs"] == 0
    assert stats["reconciliation"]["errors"] == 0
