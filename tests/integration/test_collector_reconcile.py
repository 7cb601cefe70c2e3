"""Loss accounting against a real HAProxy 2.6 under wrk load: the reconciliation of logged requests
with HAProxy's per-server counters finds nothing missing, and finds the requests that were not logged.

One HAProxy: `fe_logged` logs every request (compact format) to the UDP collector; `fe_quiet` sends
to the same backend but logs nothing, standing in for lines lost on the way. Both frontends balance
over two "instances" that are HAProxy `http-request return` frontends.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fridaymorning.ingest.accounting import Reconciler
from fridaymorning.ingest.haproxy_log import COMPACT_LOG_FORMAT
from fridaymorning.ingest.syslog import UdpCollector
from fridaymorning.router import HAProxyProcess, HAProxyRouter
from fridaymorning.testing import wait_for

pytestmark = [pytest.mark.haproxy, pytest.mark.slow, pytest.mark.timeout(600)]

# How long after an interval its lines may still arrive: generous, for a collector starved of CPU.
SETTLE_S = 10.0

CONFIG = """\
global
    log 127.0.0.1:{collector_port} local0
    stats socket {admin_socket} mode 600 level admin
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe_logged
    bind 127.0.0.1:{logged_port}
    log global
    option dontlognull
    log-format "{compact_format}"
    default_backend app
frontend fe_quiet
    bind 127.0.0.1:{quiet_port}
    default_backend app
backend app
    balance roundrobin
    server v1-1 127.0.0.1:{instance1}
    server v1-2 127.0.0.1:{instance2}
frontend instance1
    bind 127.0.0.1:{instance1}
    http-request return status 200 content-type text/plain string ok
frontend instance2
    bind 127.0.0.1:{instance2}
    http-request return status 200 content-type text/plain string ok
"""


@dataclass
class Setup:
    collector: UdpCollector
    router: HAProxyRouter
    logged_port: int
    quiet_port: int


@pytest.fixture
async def setup(haproxy_binary: str, free_port: Callable[[], int], tmp_path: Path) -> AsyncIterator[Setup]:
    """A UDP collector and a real HAProxy logging to it, with its admin socket."""
    collector = UdpCollector("127.0.0.1", 0, lambda windows: None, flush_interval_s=0.2)
    await collector.start()
    ports = {name: free_port() for name in ("logged_port", "quiet_port", "instance1", "instance2")}
    admin_socket = tmp_path / "admin.sock"
    config = CONFIG.format(
        collector_port=collector.address[1],
        admin_socket=admin_socket,
        compact_format=COMPACT_LOG_FORMAT,
        **ports,
    )
    config_path = tmp_path / "haproxy.cfg"
    config_path.write_text(config, encoding="utf-8")
    haproxy = HAProxyProcess(config_path, binary=haproxy_binary)
    await haproxy.start()
    try:
        yield Setup(collector, HAProxyRouter(admin_socket), ports["logged_port"], ports["quiet_port"])
    finally:
        await haproxy.stop()
        await collector.stop()


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


async def reconcile_under_load(setup: Setup, wrk: str, quiet_requests: bool) -> tuple[object, Reconciler]:
    """Snapshots taken while wrk runs (so each second boundary has traffic), then one reconciliation.

    wrk runs until the reconciliation is done, however long the snapshots take on a busy machine, and
    lines get SETTLE_S to arrive: a collector starved of CPU parses late, but it does parse."""
    reconciler = Reconciler(setup.router, setup.collector, settle_s=SETTLE_S, backends={"app"})
    ports = [setup.logged_port, setup.quiet_port] if quiet_requests else [setup.logged_port]
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


async def test_reconciliation_finds_no_mismatch_under_load(setup: Setup, wrk_binary: str) -> None:
    """With every request logged, the lines per server equal the growth of HAProxy's `stot` between
    two bracketing snapshots taken under wrk load, and the collector lost nothing."""
    result, reconciler = await reconcile_under_load(setup, wrk_binary, quiet_requests=False)
    assert result.mismatches == [], result.to_dict()  # type: ignore[attr-defined]
    assert result.logged > 0  # type: ignore[attr-defined]  # however slow the machine, traffic was judged
    stats = setup.collector.stats()
    assert (stats["rejected"], stats["socket_drops"]) == (0, 0)
    assert reconciler.stats()["mismatched_intervals"] == 0


async def test_reconciliation_reports_requests_that_were_not_logged(setup: Setup, wrk_binary: str) -> None:
    """Requests through the frontend that logs nothing count in `stot` but have no line: each server
    of the backend is reported with its missing lines."""
    result, reconciler = await reconcile_under_load(setup, wrk_binary, quiet_requests=True)
    mismatches = result.mismatches  # type: ignore[attr-defined]
    assert {(item.backend, item.server) for item in mismatches} == {("app", "v1-1"), ("app", "v1-2")}
    assert all(item.missing > 0 for item in mismatches)
    assert reconciler.stats()["missing_lines"] == sum(item.missing for item in mismatches)


async def test_watch_haproxy_reports_dropped_logs_in_stats(setup: Setup) -> None:
    """Once the collector watches HAProxy, `stats()` carries DroppedLogs growth and reconciliation."""
    setup.collector.watch_haproxy(setup.router, reconcile_interval_s=60.0, dropped_logs_interval_s=0.1)
    await wait_for(lambda: setup.collector.stats()["haproxy_dropped_logs"] is not None, "a DroppedLogs poll")
    stats = setup.collector.stats()
    assert stats["haproxy_dropped_logs"] == 0
    assert stats["reconciliation"]["errors"] == 0
