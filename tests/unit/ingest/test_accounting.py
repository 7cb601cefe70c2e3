"""Loss accounting: the pure reconciliation, kernel counters, and HAProxy's DroppedLogs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fridaymorning.ingest.accounting import (
    HAProxyLossMonitor,
    Mismatch,
    Reconciler,
    reconcile,
    server_counters,
    socket_drops,
    udp_rcvbuf_errors,
)

BE = "web"


@pytest.mark.parametrize(
    ("logged", "before", "after", "mismatches"),
    [
        # exact readings, every request logged
        ({(BE, "v1-1"): 10}, {(BE, "v1-1"): 100}, {(BE, "v1-1"): 110}, []),
        # two lines lost
        ({(BE, "v1-1"): 8}, {(BE, "v1-1"): 100}, {(BE, "v1-1"): 110}, [Mismatch(BE, "v1-1", 8, 10, 10)]),
        # bracketed readings: anything between 10 and 14 is consistent
        ({(BE, "v1-1"): 12}, {(BE, "v1-1"): (100, 102)}, {(BE, "v1-1"): (112, 114)}, []),
        (
            {(BE, "v1-1"): 9},
            {(BE, "v1-1"): (100, 102)},
            {(BE, "v1-1"): (112, 114)},
            [Mismatch(BE, "v1-1", 9, 10, 14)],
        ),
        # more lines than requests (a line counted twice) is a mismatch too
        ({(BE, "v1-1"): 11}, {(BE, "v1-1"): 100}, {(BE, "v1-1"): 110}, [Mismatch(BE, "v1-1", 11, 10, 10)]),
        # a server added during the interval started at 0
        ({(BE, "v2-1"): 5}, {}, {(BE, "v2-1"): 5}, []),
        # a server deleted during the interval cannot be checked; <NOSRV> has no counter
        ({(BE, "v3-1"): 5, (BE, "<NOSRV>"): 2}, {(BE, "v3-1"): 0}, {}, []),
        # a server with traffic but no line at all
        ({}, {(BE, "v1-1"): 0}, {(BE, "v1-1"): 3}, [Mismatch(BE, "v1-1", 0, 3, 3)]),
    ],
)
def test_reconcile_table(logged, before, after, mismatches) -> None:  # type: ignore[no-untyped-def]
    """Logged requests per server against the growth of HAProxy's counter, exact or bracketed."""
    assert reconcile(logged, before, after) == mismatches


def test_mismatch_says_how_many_lines_are_missing() -> None:
    """`missing` is the distance to the expected range: positive for lost lines, negative for extra."""
    assert Mismatch(BE, "s", 8, 10, 12).missing == 2
    assert Mismatch(BE, "s", 15, 10, 12).missing == -3


def test_server_counters_read_stot_of_server_rows_only() -> None:
    """FRONTEND and BACKEND rows are not servers; `backends` narrows the rows."""
    rows = [
        {"pxname": "web", "svname": "FRONTEND", "stot": "9"},
        {"pxname": "web", "svname": "v1-1", "stot": "4"},
        {"pxname": "web", "svname": "BACKEND", "stot": "9"},
        {"pxname": "other", "svname": "s", "stot": ""},
    ]
    assert server_counters(rows) == {("web", "v1-1"): 4, ("other", "s"): 0}
    assert server_counters(rows, {"web"}) == {("web", "v1-1"): 4}


def test_kernel_counters_are_read_from_proc(tmp_path: Path) -> None:
    """RcvbufErrors from the Udp lines of /proc/net/snmp; a socket's drops by inode in /proc/net/udp."""
    net = tmp_path / "net"
    net.mkdir()
    (net / "snmp").write_text(
        "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 1 2 3 4 57 6\n"
    )
    header = "  sl  local_address rem_address st tx_queue rx_queue tr tm->when retrnsmt uid timeout inode ref"
    row = "  1: 0100007F:1414 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 4242 2 00000000"
    (net / "udp").write_text(f"{header} pointer drops\n{row} 17\n")
    assert udp_rcvbuf_errors(tmp_path) == 57
    assert socket_drops(4242, tmp_path) == 17
    assert socket_drops(1, tmp_path) is None
    assert udp_rcvbuf_errors(tmp_path / "missing") is None


class FakeHAProxy:
    """Answers show info / show stat from settable values."""

    def __init__(self) -> None:
        self.dropped = 5
        self.stot = {"v1-1": 0}

    async def show_info(self) -> dict[str, str]:
        return {"Name": "HAProxy", "DroppedLogs": str(self.dropped)}

    async def show_stat(self) -> list[dict[str, str]]:
        return [{"pxname": BE, "svname": server, "stot": str(value)} for server, value in self.stot.items()]


async def test_dropped_logs_are_reported_as_growth_since_the_first_poll() -> None:
    """DroppedLogs counts since HAProxy started; the monitor reports what was dropped since it began."""
    haproxy = FakeHAProxy()
    monitor = HAProxyLossMonitor(haproxy)
    assert await monitor.poll() == 0
    haproxy.dropped = 12
    assert await monitor.poll() == 7


class FakeCollector:
    def __init__(self, logged: dict[tuple[str, str], int]) -> None:
        self.logged = logged
        self.asked: list[tuple[int, int]] = []

    def logged_between(self, first_second: int, end_second: int) -> dict[tuple[str, str], int]:
        self.asked.append((first_second, end_second))
        return self.logged


async def test_reconciler_checks_the_interval_between_two_snapshots() -> None:
    """Two bracketing snapshots, then the lines logged between their boundaries are compared."""
    haproxy = FakeHAProxy()
    clock = FakeClock(1000.5)
    collector = FakeCollector({(BE, "v1-1"): 7})
    reconciler = Reconciler(haproxy, collector, settle_s=0.0, clock=clock, margin_s=0.02)
    first = await reconciler.snapshot()
    haproxy.stot["v1-1"] = 7
    last = await reconciler.snapshot()
    result = await reconciler.check(first, last)
    assert (first.second, last.second) == (1001, 1002)
    assert collector.asked == [(1001, 1002)]
    assert result.mismatches == [] and (result.logged, result.expected_low, result.expected_high) == (7, 7, 7)
    collector.logged = {(BE, "v1-1"): 6}
    assert (await reconciler.check(first, last)).mismatches == [Mismatch(BE, "v1-1", 6, 7, 7)]
    assert reconciler.stats()["mismatched_intervals"] == 1


class FakeClock:
    """A clock that jumps forward when the code sleeps (asyncio.sleep is patched by the test)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def instant_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio.sleep in accounting advances the FakeClock it was given instead of waiting."""
    import fridaymorning.ingest.accounting as accounting

    async def sleep_until(moment: float, clock) -> None:  # type: ignore[no-untyped-def]
        if isinstance(clock, FakeClock):
            clock.now = max(clock.now, moment)

    monkeypatch.setattr(accounting, "_sleep_until", sleep_until)
