"""Reconciliation across HAProxy reloads, against a real HAProxy 2.6 in master-worker mode under wrk.

A reload starts a new worker whose `show stat` counters begin at 0. Before, the interval across it
compared the lines logged with a counter that went from tens of thousands down to a few hundred, and
reported tens of thousands of lines "missing" with a minus sign. Here HAProxy is reloaded twice while
wrk keeps it busy, and every line reaches the UDP collector on loopback (no loss, as the kernel's and
HAProxy's own drop counters confirm): the reconciliation must report 0 missing, never less.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable

import pytest

from fridaymorning.ingest.accounting import Reconciler
from fridaymorning.procfs import process_alive
from fridaymorning.router import StopTimeouts
from fridaymorning.testing import LoggingHAProxy

pytestmark = [pytest.mark.haproxy, pytest.mark.slow, pytest.mark.timeout(120)]

LOAD_SECONDS = 90


@pytest.fixture
async def setup(logging_haproxy: Callable[..., Awaitable[LoggingHAProxy]]) -> LoggingHAProxy:
    """A master-worker HAProxy that reloads as fridaymorning's own does, logging every request."""
    return await logging_haproxy(seamless_reload=True, stop_timeouts=StopTimeouts(graceful_s=3.0))


async def start_wrk(binary: str, port: int) -> asyncio.subprocess.Process:
    """wrk against the frontend for at most LOAD_SECONDS (the test stops it sooner)."""
    return await asyncio.create_subprocess_exec(
        binary,
        "-t1",
        "-c8",
        f"-d{LOAD_SECONDS}s",
        f"http://127.0.0.1:{port}/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def reload_and_wait_for_old_worker(setup: LoggingHAProxy) -> None:
    """Reload; return once the old worker has exited, so its last lines fall in this interval."""
    old_worker = await setup.haproxy.worker_pid()
    await setup.haproxy.reload()
    deadline = time.monotonic() + 30
    while process_alive(old_worker):
        assert time.monotonic() < deadline, f"the old worker {old_worker} did not exit"
        await asyncio.sleep(0.05)


async def test_reloads_under_traffic_leave_no_line_missing_and_none_negative(
    setup: LoggingHAProxy, wrk_binary: str
) -> None:
    """Two reloads under wrk load: the intervals across them are recognised as counter resets, no
    server is reported missing a line (nor a negative number), and the cumulative count of missing
    lines equals the true loss, which is 0 on loopback."""
    reconciler = Reconciler(setup.router, setup.collector, settle_s=1.5, backends={"app"}, poll_s=0.2)
    load = await start_wrk(wrk_binary, setup.ports["fe"])
    await asyncio.sleep(0.5)
    snapshots = [await reconciler.snapshot()]
    results = []
    for _ in range(2):
        await reconciler.poll()
        await reload_and_wait_for_old_worker(setup)
        snapshots.append(await reconciler.snapshot())
        results.append(await reconciler.check(snapshots[-2], snapshots[-1]))
        snapshots.append(await reconciler.snapshot())
        results.append(await reconciler.check(snapshots[-2], snapshots[-1]))
    load.terminate()
    await load.wait()
    assert [result.reset for result in results] == [True, False, True, False]
    assert all(result.logged > 0 for result in results), [result.to_dict() for result in results]
    for result in results:
        assert all(item.missing == 0 for item in result.mismatches), result.to_dict()
    # Lines lost on loopback could only be dropped by the kernel (the socket's drops) or by HAProxy
    # (DroppedLogs); the rejected lines are HAProxy's own messages about stopping old workers.
    dropped_logs = int((await setup.router.show_info())["DroppedLogs"])
    true_loss = setup.collector.stats()["socket_drops"] + dropped_logs
    assert true_loss == 0
    assert (reconciler.stats()["missing_lines"], reconciler.stats()["counter_resets"]) == (true_loss, 2)
