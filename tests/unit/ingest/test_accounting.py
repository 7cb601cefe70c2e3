"""Loss accounting: the pure reconciliation, kernel counters, and HAProxy's DroppedLogs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fridaymorning.ingest.accounting import (
    HAProxyLossMonitor,
    Ledger,
    Mismatch,
    Reconciler,
    Reconciliation,
    Snapshot,
    counters_reset,
    interval_growth,
    reconcile,
    reconcile_growth,
    server_counters,
    socket_drops,
    udp_rcvbuf_errors,
)
from fridaymorning.testing import FakeClock

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


def test_mismatch_says_how_many_lines_are_missing_or_extra_never_negative() -> None:
    """`missing` counts lines below the expected range, `surplus` lines above it; neither is negative,
    and a range open above (a reload hid its top) has no surplus."""
    assert (Mismatch(BE, "s", 8, 10, 12).missing, Mismatch(BE, "s", 8, 10, 12).surplus) == (2, 0)
    assert (Mismatch(BE, "s", 15, 10, 12).missing, Mismatch(BE, "s", 15, 10, 12).surplus) == (0, 3)
    assert (Mismatch(BE, "s", 9000, 10, None).missing, Mismatch(BE, "s", 9000, 10, None).surplus) == (0, 0)


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
    """Answers show info / show stat from settable values (`pid` None: no Pid in show info)."""

    def __init__(self, pid: int | None = None) -> None:
        self.dropped = 5
        self.stot = {"v1-1": 0}
        self.pid = pid

    async def show_info(self) -> dict[str, str]:
        info = {"Name": "HAProxy", "DroppedLogs": str(self.dropped)}
        if self.pid is not None:
            info["Pid"] = str(self.pid)
        return info

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


@pytest.fixture(autouse=True)
def instant_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio.sleep in accounting advances the FakeClock it was given instead of waiting."""
    import fridaymorning.ingest.accounting as accounting

    async def sleep_until(moment: float, clock) -> None:  # type: ignore[no-untyped-def]
        if isinstance(clock, FakeClock):
            clock.now = max(clock.now, moment)

    monkeypatch.setattr(accounting, "_sleep_until", sleep_until)


# --- HAProxy's counters restart on a reload ------------------------------------------------------

S1 = (BE, "v1-1")


def test_a_reload_is_a_new_worker_or_a_counter_that_went_down() -> None:
    """A reset shows as another worker pid; without pids, as a counter lower than before."""
    assert counters_reset(Snapshot(1, {S1: (500, 500)}, 10), Snapshot(2, {S1: (900, 900)}, 11))
    assert not counters_reset(Snapshot(1, {S1: (500, 500)}, 10), Snapshot(2, {S1: (20, 20)}, 10))
    assert counters_reset(Snapshot(1, {S1: (500, 502)}), Snapshot(2, {S1: (20, 21)}))
    assert not counters_reset(Snapshot(1, {S1: (500, 502)}), Snapshot(2, {S1: (501, 510)}))


def test_growth_across_a_reload_counts_both_workers_and_is_open_above() -> None:
    """Across a reload the new worker counted from 0; the old worker's growth up to its last reading
    is added; what it served after that is unknown, so the range has no upper end."""
    first, last = Snapshot(1, {S1: (1000, 1004)}, 10), Snapshot(61, {S1: (300, 305)}, 11)
    assert interval_growth(first, last) == {S1: (300, None)}
    assert interval_growth(first, last, {S1: 1500}) == {S1: (796, None)}
    assert interval_growth(Snapshot(1, {S1: (5, 5)}, 10), Snapshot(2, {S1: (9, 9)}, 10)) == {S1: (4, 4)}


def test_the_interval_of_a_reload_is_never_negative() -> None:
    """The old failure: the counter dropped from 50,000 to 300 at a reload, and the interval reported
    about -49,000 lines missing. Every logged line is now within the (open) range: none missing."""
    first, last = Snapshot(1, {S1: (50_000, 50_010)}, 10), Snapshot(61, {S1: (300, 310)}, 11)
    assert reconcile({S1: 5_300}, first.counters, last.counters)[0].missing == 0
    growth = interval_growth(first, last, {S1: 54_000})
    assert growth == {S1: (4_290, None)}
    ledger = Ledger()
    ledger.add(Reconciliation(1, 61, 5_300, 4_290, None, [], reset=True))
    assert (ledger.missing, ledger.surplus) == (0, 0)


def test_ledger_lets_a_boundary_straddle_cancel_and_keeps_losses() -> None:
    """A request logged before a boundary but counted after it is +1 then -1 on consecutive intervals:
    the segment as a whole misses nothing. A real deficit stays, across a reload and after a gap."""
    ledger = Ledger()
    ledger.add(Reconciliation(0, 60, 101, 100, 100, []))
    assert (ledger.missing, ledger.surplus) == (0, 1)
    ledger.add(Reconciliation(60, 120, 99, 100, 100, []))
    assert (ledger.missing, ledger.surplus) == (0, 0)
    ledger.add(Reconciliation(120, 180, 90, 100, 100, []))
    assert ledger.missing == 10
    ledger.add(Reconciliation(180, 240, 102, 100, None, [], reset=True))  # the old worker's tail: 2
    assert (ledger.missing, ledger.surplus) == (8, 0)
    ledger.add(Reconciliation(300, 360, 45, 50, 50, []))  # after a gap: a segment of its own
    assert (ledger.missing, ledger.surplus) == (13, 0)


async def test_reconciler_across_a_reload_reports_nothing_missing() -> None:
    """Snapshots from two workers (a reload between them): every line logged, nothing missing, and
    the reset is counted; a later interval on the new worker is exact again."""
    haproxy = FakeHAProxy(pid=10)
    clock = FakeClock(1000.5)
    collector = FakeCollector({S1: 0})
    reconciler = Reconciler(haproxy, collector, settle_s=0.0, clock=clock)
    haproxy.stot["v1-1"] = 50_000
    first = await reconciler.snapshot()
    haproxy.stot["v1-1"] = 50_400
    await reconciler.poll()  # the old worker's last count: 400 more
    haproxy.pid, haproxy.stot["v1-1"] = 11, 250  # reloaded: the new worker starts from 0
    second = await reconciler.snapshot()
    collector.logged = {S1: 650}  # 400 + 250: every line
    result = await reconciler.check(first, second)
    assert (result.reset, result.expected_low, result.expected_high) == (True, 650, None)
    assert result.mismatches == []
    haproxy.stot["v1-1"] = 350
    third = await reconciler.snapshot()
    collector.logged = {S1: 90}
    assert (await reconciler.check(second, third)).mismatches == [Mismatch(BE, "v1-1", 90, 100, 100)]
    stats = reconciler.stats()
    assert (stats["missing_lines"], stats["counter_resets"], stats["surplus_lines"]) == (10, 1, 0)


def test_the_old_workers_tail_after_its_last_reading_is_within_the_range() -> None:
    """Lines of requests the old worker served after its last reading exceed the low end of the
    range, but the range is open above: no mismatch, no surplus."""
    first, last = Snapshot(1, {S1: (50_000, 50_000)}, 10), Snapshot(61, {S1: (250, 250)}, 11)
    growth = interval_growth(first, last, {S1: 50_400})
    assert reconcile_growth({S1: 700}, growth) == []


async def test_loss_while_no_collector_ran_is_counted_from_the_kept_snapshot(tmp_path: Path) -> None:
    """A collector keeps its last snapshot; the next one compares HAProxy's growth since then with
    what the store holds for that interval, and reports the difference as lost across the restart."""
    state = tmp_path / "reconciled.json"
    haproxy = FakeHAProxy(pid=10)
    haproxy.stot["v1-1"] = 1_000
    clock = FakeClock(1000.5)
    earlier = Reconciler(haproxy, FakeCollector({}), settle_s=0.0, clock=clock, state_path=state)
    earlier.save_state(await earlier.snapshot())
    asked: list[tuple[int, int]] = []

    def stored(first: int, end: int) -> int:
        asked.append((first, end))
        return 4_000

    haproxy.stot["v1-1"] = 5_300
    clock.now = 1010.5
    later = Reconciler(haproxy, FakeCollector({}), settle_s=0.0, clock=clock, state_path=state, stored=stored)
    kept = later.load_state()
    assert kept is not None and kept.counters == {S1: (1_000, 1_000)}
    assert await later.check_restart(kept, await later.snapshot()) == 300
    assert asked == [(1001, 1011)]
    later.save_state(await later.snapshot())
    assert (later.stats()["lost_across_restart"], later.stats()["lost_across_restart_max"]) == (300, 300)
    again = Reconciler(haproxy, FakeCollector({}), settle_s=0.0, clock=clock, state_path=state)
    again.load_state()
    assert again.lost_across_restart == 300  # the total survives the next restart as well


async def test_loss_across_a_restart_is_a_range_when_snapshots_are_blurred(tmp_path: Path) -> None:
    """Requests counted while a snapshot was read may or may not be in the interval: the loss claimed
    is the certain one (low end), and the most it can be is reported beside it."""
    state = tmp_path / "reconciled.json"
    previous = Snapshot(1001, {S1: (1_000, 1_004)}, 10)
    first = Snapshot(1011, {S1: (5_300, 5_303)}, 10)
    reconciler = Reconciler(
        FakeHAProxy(pid=10),
        FakeCollector({}),
        settle_s=0.0,
        clock=FakeClock(1011.5),
        state_path=state,
        stored=lambda first, end: 4_000,
    )
    assert await reconciler.check_restart(previous, first) == 296
    assert (reconciler.lost_across_restart, reconciler.lost_across_restart_max) == (296, 303)
