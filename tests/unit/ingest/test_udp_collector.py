"""The UDP collector on loopback, fed by hand-made datagrams (the real HAProxy is in tests/integration)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest

from fridaymorning.errors import PortInUseError
from fridaymorning.ingest.syslog import UdpCollector
from fridaymorning.models import Window
from fridaymorning.testing import SYSLOG_HEADER, compact_log_line

pytestmark = pytest.mark.timeout(20)

T = 1_800_000_000


def compact(second: int, server: str, status: int = 200) -> bytes:
    return (compact_log_line(second + 0.25, server, status) + "\n").encode()


class Sender:
    """Sends datagrams to the collector from a plain UDP socket."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, *datagrams: bytes) -> None:
        for datagram in datagrams:
            self.socket.sendto(datagram, self.address)


async def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Poll `condition` until it holds, failing the test after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def received() -> AsyncIterator[list[Window]]:
    """Windows handed to the collector's sink."""
    yield []


@pytest.fixture
async def collector(received: list[Window]) -> AsyncIterator[UdpCollector]:
    """A collector on a free loopback port whose clock says 'long ago', so nothing is flushed early."""
    running = UdpCollector("127.0.0.1", 0, received.extend, flush_interval_s=0.05, clock=lambda: 0.0)
    await running.start()
    yield running
    await running.stop()


def totals(windows: list[Window]) -> dict[tuple[int, str], int]:
    counts: dict[tuple[int, str], int] = {}
    for window in windows:
        key = (window.second, window.version)
        counts[key] = counts.get(key, 0) + window.requests
    return counts


async def test_requests_are_aggregated_and_flushed_at_stop(
    collector: UdpCollector, received: list[Window]
) -> None:
    """Datagrams become per-second, per-version windows; stop() hands every open window to the sink."""
    sender = Sender(collector.address)
    sender.send(*[compact(T + index % 2, f"v{1 + index % 3}-1") for index in range(60)])
    await wait_until(lambda: collector.stats()["requests"] == 60)
    assert received == []
    await collector.stop()
    assert sum(window.requests for window in received) == 60
    assert totals(received) == {
        (T, "v1"): 10,
        (T, "v2"): 10,
        (T, "v3"): 10,
        (T + 1, "v1"): 10,
        (T + 1, "v2"): 10,
        (T + 1, "v3"): 10,
    }
    assert collector.stats()["windows_flushed"] == 6


async def test_malformed_datagrams_are_counted_and_never_stop_the_collector(collector: UdpCollector) -> None:
    """Garbage, binary, empty and oversized datagrams are rejected; good ones after them still count."""
    sender = Sender(collector.address)
    garbage = [b"", b"\xff\xfe\x00\x01", b"<134>Nov 26 12:38:53 haproxy[1]: fm1 x y", b"hello", b"x" * 60000]
    sender.send(*garbage, b"<13>1 broken", compact(T, "v1-1"))
    await wait_until(lambda: collector.stats()["requests"] == 1)
    stats = collector.stats()
    assert stats["datagrams"] == 7
    assert stats["rejected"] == 5  # the empty datagram holds no line
    assert len(stats["last_rejected"]) == 5
    assert stats["last_rejected"][-1] == "<13>1 broken"
    assert all(len(line) <= 500 for line in stats["last_rejected"])


async def test_events_and_multi_line_datagrams(collector: UdpCollector) -> None:
    """HAProxy notices count as events; a datagram holding several lines (ring/TCP style) is split."""
    sender = Sender(collector.address)
    event = SYSLOG_HEADER.encode() + b"Server web/v2-1 is DOWN, reason: Layer4 connection problem."
    sender.send(event, compact(T, "v1-1") + compact(T, "v1-2") + compact(T, "v2-1"))
    await wait_until(lambda: collector.stats()["lines"] == 4)
    stats = collector.stats()
    assert (stats["events"], stats["requests"], stats["rejected"], stats["datagrams"]) == (1, 3, 0, 2)


async def test_periodic_flush_sends_windows_older_than_the_lateness() -> None:
    """Once per interval, windows with second < now - lateness go to the (async) sink; newer ones wait."""
    received: list[Window] = []

    async def sink(windows: list[Window]) -> None:
        await asyncio.sleep(0)
        received.extend(windows)

    collector = UdpCollector(
        "127.0.0.1", 0, sink, lateness_s=1.0, flush_interval_s=0.05, clock=lambda: T + 2.5
    )
    await collector.start()
    try:
        Sender(collector.address).send(compact(T, "v1-1"), compact(T + 1, "v1-1"), compact(T + 2, "v1-1"))
        await wait_until(lambda: len(received) == 2)
        assert [window.second for window in received] == [T, T + 1]
        assert collector.stats()["open_windows"] == 1
    finally:
        await collector.stop()
    assert [window.second for window in received] == [T, T + 1, T + 2]


async def test_a_failing_sink_is_counted_not_fatal() -> None:
    """A sink that raises loses those windows, is counted in stats, and the collector keeps going."""
    calls: list[int] = []

    def failing_sink(windows: list[Window]) -> None:
        calls.append(len(windows))
        raise OSError("disk full")

    began = time.monotonic()  # a running clock: late lines are written with a second still open
    collector = UdpCollector(
        "127.0.0.1", 0, failing_sink, flush_interval_s=0.05, clock=lambda: T + 100 + time.monotonic() - began
    )
    await collector.start()
    try:
        sender = Sender(collector.address)
        sender.send(compact(T, "v1-1"))
        await wait_until(lambda: collector.stats()["sink_errors"] == 1)
        sender.send(compact(T + 1, "v1-1"))
        await wait_until(lambda: collector.stats()["sink_errors"] == 2)
    finally:
        await collector.stop()
    stats = collector.stats()
    assert (stats["windows_dropped"], stats["windows_flushed"], stats["requests"]) == (2, 0, 2)


async def test_binding_a_taken_port_raises_port_in_use(collector: UdpCollector) -> None:
    """A second collector on the same address raises PortInUseError naming the collector."""
    host, port = collector.address
    second = UdpCollector(host, port, lambda windows: None)
    with pytest.raises(PortInUseError, match=r"the collector cannot listen on 127\.0\.0\.1"):
        await second.start()


async def test_receive_buffer_is_enlarged(collector: UdpCollector) -> None:
    """The socket asks for a large receive buffer (forced when root, capped by rmem_max otherwise)."""
    assert collector.stats()["receive_buffer_bytes"] >= 200 * 1024


async def test_stop_is_idempotent(collector: UdpCollector) -> None:
    """Stopping twice (fixture teardown after an explicit stop) does nothing the second time."""
    await collector.stop()
    await collector.stop()
    assert collector.stats()["open_windows"] == 0
