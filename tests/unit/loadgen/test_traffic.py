"""The traffic generator: loopback-only targets, tallies per version, pacing, and resilience."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest

from fridaymorning.loadgen.traffic import CATCH_UP_S, TrafficGenerator, check_loopback_url


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "http://10.0.0.1:8080/",
        "http://0.0.0.0:8080/",
        "http://[2001:db8::1]/",
        "http://127.0.0.1.nip.io/",
        "ftp://127.0.0.1/",
        "/relative/path",
    ],
)
def test_non_loopback_urls_are_refused(url: str) -> None:
    """The generator must not be able to load anyone else's server: constructing it raises ValueError."""
    with pytest.raises(ValueError):
        TrafficGenerator(url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/", "http://127.8.9.10/x", "http://localhost:1/", "https://[::1]:443/"]
)
def test_loopback_urls_are_accepted(url: str) -> None:
    """All of 127.0.0.0/8, ::1 and the name localhost are loopback."""
    assert check_loopback_url(url) == url


def mock_transport(statuses: list[int | None], version: str | None = "v2") -> httpx.MockTransport:
    """Answers in turn with each status; None raises a connection error. Adds X-Version unless None."""
    cycle = itertools.cycle(statuses)

    def handle(request: httpx.Request) -> httpx.Response:
        status = next(cycle)
        if status is None:
            raise httpx.ConnectError("connection refused", request=request)
        headers = {"X-Version": version} if version else {}
        return httpx.Response(status, headers=headers)

    return httpx.MockTransport(handle)


async def test_tally_counts_requests_errors_and_transport_errors_per_version() -> None:
    """5xx count as errors of the answering version; unanswered requests count under 'none', never raise."""
    traffic = TrafficGenerator(
        "http://127.0.0.1:1/",
        rate_per_s=5000,
        max_requests=40,
        transport=mock_transport([200, 500, 404, None]),
    )
    await asyncio.wait_for(traffic.run(), timeout=10)
    assert traffic.snapshot() == {
        "v2": {"requests": 30, "errors": 10, "transport_errors": 0},
        "none": {"requests": 10, "errors": 0, "transport_errors": 10},
    }


async def test_answers_without_version_header_count_as_unknown() -> None:
    """A response without X-Version is tallied under 'unknown'."""
    traffic = TrafficGenerator(
        "http://127.0.0.1:1/", rate_per_s=5000, max_requests=5, transport=mock_transport([200], version=None)
    )
    await asyncio.wait_for(traffic.run(), timeout=10)
    assert traffic.snapshot() == {"unknown": {"requests": 5, "errors": 0, "transport_errors": 0}}


async def test_rate_is_paced_and_the_stop_event_ends_the_run() -> None:
    """Never more than the rate allows (the elapsed time's worth plus one catch-up burst), however slow
    or fast the machine is; and setting stop ends run()."""
    rate = 100
    traffic = TrafficGenerator("http://127.0.0.1:1/", rate_per_s=rate, transport=mock_transport([200]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    run = asyncio.create_task(traffic.run(stop))
    while traffic.sent < 10:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(run, timeout=60)
    elapsed = loop.time() - started
    assert traffic.sent <= rate * (elapsed + CATCH_UP_S) + 1
    assert traffic.snapshot()["v2"]["requests"] == traffic.sent


async def test_start_and_stop_run_in_the_background() -> None:
    """start() returns at once; stop() ends the load and waits for the requests in flight."""
    traffic = TrafficGenerator("http://127.0.0.1:1/", rate_per_s=1000, transport=mock_transport([200]))
    traffic.start()
    await asyncio.sleep(0.1)
    await asyncio.wait_for(traffic.stop(), timeout=5)
    sent = traffic.sent
    await asyncio.sleep(0.05)
    assert sent > 0
    assert traffic.sent == sent
    assert traffic.snapshot()["v2"]["requests"] == sent


async def test_snapshot_is_a_copy() -> None:
    """Mutating a snapshot does not change the generator's tally."""
    traffic = TrafficGenerator("http://127.0.0.1:1/", max_requests=1, transport=mock_transport([200]))
    await asyncio.wait_for(traffic.run(), timeout=5)
    snapshot = traffic.snapshot()
    snapshot["v2"]["requests"] = 999
    assert traffic.snapshot()["v2"]["requests"] == 1
