"""The UDP collector fed by a real HAProxy 2.6: both log formats, per-version counts, status classes.

One HAProxy plays every part: two logging frontends (our compact format, and `option httplog` with a
captured header), each balancing over two "instances" that are themselves HAProxy frontends: `v1-1`
always answers 200 and `v2-1` always 503. The client's own tally of responses is the ground truth.
`option dontlognull` keeps the readiness probes (connect, then close without a request) out of the logs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fridaymorning.errors import MissingBinaryError
from fridaymorning.ingest.syslog import UdpCollector
from fridaymorning.logformat import COMPACT_LOG_FORMAT
from fridaymorning.models import STATUS_CLASSES, Window
from fridaymorning.platform.local import free_port
from fridaymorning.testing import EVENT_DEADLINE_S, listening, wait_for_sync

pytestmark = [pytest.mark.haproxy, pytest.mark.timeout(600)]

REQUESTS_PER_FRONTEND = 300

HAPROXY_CONFIG = """\
global
    log 127.0.0.1:{collector_port} local0
    maxconn 1000
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe_compact
    bind 127.0.0.1:{compact_port}
    log global
    option dontlognull
    log-format "{compact_format}"
    default_backend app_compact
frontend fe_httplog
    bind 127.0.0.1:{httplog_port}
    log global
    option dontlognull
    option httplog
    capture request header User-Agent len 64
    default_backend app_httplog
{backends}
frontend instance_v1
    bind 127.0.0.1:{ok_port}
    http-request return status 200 content-type text/plain string ok
frontend instance_v2
    bind 127.0.0.1:{failing_port}
    http-request return status 503
"""

BACKEND = """\
backend {name}
    balance roundrobin
    server v1-1 127.0.0.1:{ok_port}
    server v2-1 127.0.0.1:{failing_port}
"""


@dataclass
class Frontends:
    compact_port: int
    httplog_port: int


def haproxy_binary() -> str:
    """The haproxy binary (also looked for in /usr/sbin); fails with install advice, never skips."""
    search_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    binary = shutil.which("haproxy", path=search_path)
    if binary is None:
        pytest.fail(str(MissingBinaryError("haproxy")))
    return binary


def wait_for_listener(port: int, timeout_s: float = 10.0) -> None:
    """Block until 127.0.0.1:port accepts connections, or fail the test."""
    wait_for_sync(lambda: listening(port), f"HAProxy listening on 127.0.0.1:{port}", timeout_s)


@pytest.fixture
async def received() -> AsyncIterator[list[Window]]:
    """The windows the collector hands to its sink."""
    yield []


@pytest.fixture
async def collector(received: list[Window]) -> AsyncIterator[UdpCollector]:
    """A running collector on a free loopback UDP port, with a list as its sink."""
    running = UdpCollector("127.0.0.1", 0, received.extend, flush_interval_s=0.2)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
def haproxy(collector: UdpCollector, tmp_path: Path) -> Iterator[Frontends]:
    """A real HAProxy logging to the collector; stopped (then killed if need be) at teardown."""
    ports = {
        name: free_port("127.0.0.1") for name in ("compact_port", "httplog_port", "ok_port", "failing_port")
    }
    backends = "".join(
        BACKEND.format(name=name, ok_port=ports["ok_port"], failing_port=ports["failing_port"])
        for name in ("app_compact", "app_httplog")
    )
    config = HAPROXY_CONFIG.format(
        collector_port=collector.address[1], compact_format=COMPACT_LOG_FORMAT, backends=backends, **ports
    )
    config_path = tmp_path / "haproxy.cfg"
    config_path.write_text(config, encoding="utf-8")
    with (tmp_path / "haproxy.out").open("wb") as output:
        process = subprocess.Popen(
            [haproxy_binary(), "-f", str(config_path), "-db"], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        for port in ports.values():
            wait_for_listener(port)
        yield Frontends(ports["compact_port"], ports["httplog_port"])
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


async def send_requests(port: int, count: int) -> Counter[int]:
    """`count` GETs to a loopback frontend; returns how many responses had each status."""
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=5) as client:
        for index in range(count):
            response = await client.get(f"/item/{index}", headers={"User-Agent": "fm test agent/1.0"})
            statuses[response.status_code] += 1
    return statuses


def send_bad_request(port: int) -> None:
    """A request HAProxy cannot parse: it answers 400 itself and logs `<NOSRV>` (and `<BADREQ>`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        connection.recv(1024)


def merged_by_version(windows: list[Window], backend: str) -> dict[str, Window]:
    """All the windows of `backend`, merged per version."""
    merged: dict[str, Window] = {}
    for window in windows:
        if window.backend != backend:
            continue
        total = merged.setdefault(window.version, Window(backend=backend, version=window.version, second=0))
        total.merge(window)
    return merged


def status_counts(window: Window) -> dict[str, int]:
    return {name: count for name, count in zip(STATUS_CLASSES, window.status, strict=True) if count}


async def test_collector_counts_match_what_haproxy_served(
    haproxy: Frontends, collector: UdpCollector, received: list[Window]
) -> None:
    """Every request sent through either log format lands in the right (backend, version) window
    with the right status class and failure count, at the second it was sent."""
    started = time.time()
    compact_statuses = await send_requests(haproxy.compact_port, REQUESTS_PER_FRONTEND)
    httplog_statuses = await send_requests(haproxy.httplog_port, REQUESTS_PER_FRONTEND)
    await asyncio.to_thread(send_bad_request, haproxy.compact_port)
    await asyncio.to_thread(send_bad_request, haproxy.httplog_port)
    expected_requests = 2 * REQUESTS_PER_FRONTEND + 2

    deadline = time.monotonic() + EVENT_DEADLINE_S
    while collector.stats()["requests"] < expected_requests and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    finished = time.time()
    await collector.stop()

    stats = collector.stats()
    assert (stats["requests"], stats["rejected"]) == (expected_requests, 0), stats["last_rejected"]
    for backend, frontend, statuses in (
        ("app_compact", "fe_compact", compact_statuses),
        ("app_httplog", "fe_httplog", httplog_statuses),
    ):
        assert set(statuses) == {200, 503}, "both instances should have served"
        versions = merged_by_version(received, backend)
        assert set(versions) == {"v1", "v2"}
        assert versions["v1"].requests == statuses[200]
        assert status_counts(versions["v1"]) == {"2xx": statuses[200]}
        assert versions["v1"].failed == 0
        assert versions["v2"].requests == statuses[503]
        assert status_counts(versions["v2"]) == {"5xx": statuses[503]}
        assert versions["v2"].failed == statuses[503]
        assert versions["v1"].tr.count == statuses[200]
        # The bad request never reached a backend: HAProxy logs it under the frontend, server <NOSRV>.
        [bad] = merged_by_version(received, frontend).values()
        assert (bad.version, bad.requests, status_counts(bad), bad.failed) == ("<NOSRV>", 1, {"4xx": 1}, 1)
    assert all(int(started) - 1 <= window.second <= finished + 1 for window in received)
