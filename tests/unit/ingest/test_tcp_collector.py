"""The TCP collector on loopback, fed by a plain socket client in both RFC 6587 framings."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from fridaymorning.ingest.framing import frame_octet_counted
from fridaymorning.ingest.syslog import TcpCollector
from fridaymorning.models import Window
from fridaymorning.testing import compact_log_line

pytestmark = pytest.mark.timeout(20)

T = 1_800_000_000


def compact(second: int, server: str) -> bytes:
    return compact_log_line(second + 0.25, server).encode()


@pytest.fixture
async def collector() -> AsyncIterator[tuple[TcpCollector, list[Window]]]:
    """A TCP collector on a free loopback port whose clock says 'long ago' (nothing flushed early)."""
    received: list[Window] = []
    running = TcpCollector("127.0.0.1", 0, received.extend, flush_interval_s=0.05, clock=lambda: 0.0)
    await running.start()
    yield running, received
    await running.stop()


async def send(address: tuple[str, int], payload: bytes, chunk: int = 7) -> None:
    """Send `payload` in small chunks, so frames straddle TCP segments."""

    def blocking() -> None:
        with socket.create_connection(address) as client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for start in range(0, len(payload), chunk):
                client.sendall(payload[start : start + chunk])

    await asyncio.to_thread(blocking)


async def wait_for(condition, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("framing", ["octet-count", "newline"])
async def test_both_framings_deliver_every_line(
    collector: tuple[TcpCollector, list[Window]], framing: str
) -> None:
    """Octet-counted and LF-framed streams, cut into 7-byte segments, yield every request once,
    with a ring's drop notice counted as an event and its number in `ring_dropped`."""
    running, received = collector
    lines = [compact(T + index % 2, f"v{1 + index % 2}-1") for index in range(40)]
    lines.append(b"<134>Nov 26 12:38:53 haproxy[1]: 4 events dropped")
    if framing == "octet-count":
        payload = b"".join(frame_octet_counted(line) for line in lines)
    else:
        payload = b"".join(line + b"\n" for line in lines)
    await send(running.address, payload)
    await wait_for(lambda: running.stats()["lines"] == 41)
    await running.stop()
    stats = running.stats()
    assert (stats["requests"], stats["events"], stats["ring_dropped"], stats["rejected"]) == (40, 1, 4, 0)
    assert sum(window.requests for window in received) == 40
    assert stats["connections_total"] == 1 and stats["framing_errors"] == 0


async def test_a_bad_frame_closes_the_connection_and_is_counted(
    collector: tuple[TcpCollector, list[Window]],
) -> None:
    """An octet count that is not a number ends that connection; the collector keeps serving."""
    running, _ = collector
    await send(running.address, frame_octet_counted(compact(T, "v1-1")) + b"12x garbage")
    await wait_for(lambda: running.stats()["framing_errors"] == 1)
    await send(running.address, compact(T, "v1-1") + b"\n")
    await wait_for(lambda: running.stats()["requests"] == 2)
