"""Loss accounting: every place a log line can be lost, counted, and a check that none was missed.

Where lines are lost, and what counts them:

* HAProxy could not send a line (UDP socket full, ring full): `DroppedLogs` in `show info`, polled
  by `HAProxyLossMonitor`, reported as a delta since the collector started.
* A HAProxy ring overwrote lines before its TCP forwarder sent them: the ring says so itself, in a
  line 'N events dropped' that the collector counts (`ring_dropped`).
* The kernel dropped datagrams because the collector's socket buffer was full: the socket's own
  `drops` in /proc/net/udp (exact for this socket), and the host-wide `RcvbufErrors` of
  /proc/net/snmp as a delta since start (every UDP socket of the host; a cross-check).
* A line arrived but could not be parsed: `rejected`, with the last few kept.

`reconcile` then checks the total: the requests logged per server must equal the growth of HAProxy's
own per-server request counter (`stot` in `show stat`) between two snapshots. See its docstring for
how snapshots bracket a second boundary, which makes the check exact rather than "within a tolerance".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fridaymorning.ingest.aggregate import ServerKey

logger = logging.getLogger(__name__)

_PROC = Path("/proc")


def udp_rcvbuf_errors(proc: Path = _PROC) -> int | None:
    """The host's UDP RcvbufErrors counter (/proc/net/snmp), or None where there is none."""
    try:
        lines = (proc / "net" / "snmp").read_text().splitlines()
    except OSError:
        return None
    udp = [line.split()[1:] for line in lines if line.startswith("Udp:")]
    if len(udp) < 2 or "RcvbufErrors" not in udp[0]:
        return None
    return int(udp[1][udp[0].index("RcvbufErrors")])


def socket_drops(inode: int, proc: Path = _PROC) -> int | None:
    """Datagrams the kernel dropped for the UDP socket with this inode (last column of /proc/net/udp)."""
    for table in ("udp", "udp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 13 and fields[9] == str(inode):
                return int(fields[-1])
    return None


def socket_inode(fd: int) -> int:
    """The inode of a socket, which names it in /proc/net/udp."""
    return os.fstat(fd).st_ino


class Baseline:
    """A counter read at start, so stats can show its growth since then (None when unreadable)."""

    def __init__(self, read: Callable[[], int | None]) -> None:
        self._read = read
        self._start = read()

    def delta(self) -> int | None:
        now = self._read()
        if now is None or self._start is None:
            return None
        return now - self._start


# --- HAProxy's side -----------------------------------------------------------------------------


class HAProxyStats(Protocol):
    """What the loss monitor needs of a router: HAProxyRouter has both."""

    async def show_info(self) -> dict[str, str]: ...

    async def show_stat(self) -> list[dict[str, str]]: ...


class LoggedCounts(Protocol):
    """What the reconciler needs of a collector."""

    def logged_between(self, first_second: int, end_second: int) -> dict[ServerKey, int]: ...


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Requests HAProxy counted for a server, against the requests the collector logged for it.

    `expected_low`..`expected_high` is the growth of HAProxy's counter over the reconciled interval
    (a range because each snapshot brackets its second boundary); `missing` is how many lines are
    unaccounted for (negative: more lines than requests, e.g. a line counted twice).
    """

    backend: str
    server: str
    logged: int
    expected_low: int
    expected_high: int

    @property
    def missing(self) -> int:
        if self.logged < self.expected_low:
            return self.expected_low - self.logged
        return self.expected_high - self.logged if self.logged > self.expected_high else 0


CounterReading = int | tuple[int, int]  # exact, or (read before the boundary, read after it)


def reconcile(
    logged: Mapping[ServerKey, int],
    counters_before: Mapping[ServerKey, CounterReading],
    counters_after: Mapping[ServerKey, CounterReading],
) -> list[Mismatch]:
    """Servers whose logged requests differ from the growth of HAProxy's request counter.

    `logged[(backend, server)]` counts the lines of requests accepted between two second boundaries
    B1 and B2. `counters_before`/`counters_after` are HAProxy's cumulative per-server request counters
    at B1 and B2, each either exact or a pair (read just before the boundary, read just after it):
    the true value at the boundary lies between the two, so the expected growth is a range, and a
    mismatch is reported only when `logged` is outside it. No tolerance is guessed: with no traffic at
    the boundaries the range is a single number, and the check is exact.

    A server missing from `counters_after` (deleted meanwhile) cannot be checked and is skipped; one
    missing from `counters_before` (added meanwhile) started at 0. Logged servers HAProxy has no
    counter for (`<NOSRV>`) are skipped. Sorted by backend, server.
    """
    mismatches = []
    for key in sorted(counters_after):
        expected_low, expected_high = _growth(counters_before.get(key, 0), counters_after[key])
        count = logged.get(key, 0)
        if not expected_low <= count <= expected_high:
            mismatches.append(Mismatch(key[0], key[1], count, expected_low, expected_high))
    return mismatches


def _growth(before: CounterReading, after: CounterReading) -> tuple[int, int]:
    """The range of a counter's growth between two (possibly bracketed) readings."""
    before_low, before_high = _bounds(before)
    after_low, after_high = _bounds(after)
    return max(0, after_low - before_high), after_high - before_low


def _bounds(reading: CounterReading) -> tuple[int, int]:
    if isinstance(reading, tuple):
        return reading
    return reading, reading


def server_counters(rows: list[dict[str, str]], backends: set[str] | None = None) -> dict[ServerKey, int]:
    """`stot` (cumulative requests) per (backend, server) from `show stat` rows."""
    return {
        (row["pxname"], row["svname"]): int(row.get("stot") or 0)
        for row in rows
        if row.get("svname") not in ("FRONTEND", "BACKEND", None)
        and (backends is None or row["pxname"] in backends)
    }


@dataclass(slots=True)
class Reconciliation:
    """The result of one reconciled interval [first_second, end_second)."""

    first_second: int
    end_second: int
    logged: int
    expected_low: int
    expected_high: int
    mismatches: list[Mismatch]

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_second": self.first_second,
            "end_second": self.end_second,
            "logged": self.logged,
            "expected_low": self.expected_low,
            "expected_high": self.expected_high,
            "mismatches": [
                {
                    "backend": item.backend,
                    "server": item.server,
                    "logged": item.logged,
                    "expected_low": item.expected_low,
                    "expected_high": item.expected_high,
                    "missing": item.missing,
                }
                for item in self.mismatches
            ],
        }


@dataclass(slots=True)
class _Snapshot:
    second: int  # the boundary it brackets
    counters: dict[ServerKey, tuple[int, int]]


class Reconciler:
    """Once per `interval_s`, checks that every request HAProxy counted was logged (see `reconcile`).

    Each snapshot brackets a second boundary B: `show stat` is read once finishing before B and once
    starting after B. Requests accepted before B are in the first reading at the latest, those
    accepted after B only in the second. The interval between two snapshots is reconciled
    `settle_s` after its end (the collector's lateness plus transit), so late lines are in.

    Assumes each request is counted once by HAProxy and logged once, with its accept time: retries
    redispatched to another server would count on two servers (none are configured by fridaymorning).
    """

    def __init__(
        self,
        router: HAProxyStats,
        collector: LoggedCounts,
        *,
        interval_s: float = 60.0,
        settle_s: float = 3.0,
        backends: set[str] | None = None,
        margin_s: float = 0.02,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._router = router
        self._collector = collector
        self._interval_s = interval_s
        self._settle_s = settle_s
        self._backends = backends
        self._margin_s = margin_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.reconciliations = 0
        self.mismatched_intervals = 0
        self.missing_total = 0
        self.last: Reconciliation | None = None
        self.errors = 0

    async def snapshot(self) -> _Snapshot:
        """HAProxy's counters read just before and just after the next second boundary."""
        while True:
            boundary = int(self._clock()) + 1
            await _sleep_until(boundary - self._margin_s, self._clock)
            before = await self._counters()
            if self._clock() < boundary:  # the reading finished before the boundary: usable
                break
        await _sleep_until(boundary + self._margin_s / 2, self._clock)
        after = await self._counters()
        keys = set(before) | set(after)
        return _Snapshot(boundary, {key: (before.get(key, 0), after.get(key, 0)) for key in keys})

    async def check(self, first: _Snapshot, last: _Snapshot) -> Reconciliation:
        """Reconcile the interval between two snapshots, once its lines have had time to arrive."""
        await _sleep_until(last.second + self._settle_s, self._clock)
        logged = self._collector.logged_between(first.second, last.second)
        mismatches = reconcile(logged, first.counters, last.counters)
        growth = [_growth(first.counters.get(key, (0, 0)), reading) for key, reading in last.counters.items()]
        result = Reconciliation(
            first.second,
            last.second,
            sum(logged.get(key, 0) for key in last.counters),
            sum(low for low, _ in growth),
            sum(high for _, high in growth),
            mismatches,
        )
        self._record(result)
        return result

    def _record(self, result: Reconciliation) -> None:
        self.reconciliations += 1
        self.last = result
        if result.mismatches:
            self.mismatched_intervals += 1
            self.missing_total += sum(item.missing for item in result.mismatches)
            logger.warning("log reconciliation found mismatches: %s", result.to_dict()["mismatches"])

    async def _counters(self) -> dict[ServerKey, int]:
        return server_counters(await self._router.show_stat(), self._backends)

    def start(self) -> None:
        """Run forever in a task (call from the event loop)."""
        self._task = asyncio.create_task(self._run(), name="collector-reconcile")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        previous: _Snapshot | None = None
        while True:
            try:
                current = await self.snapshot()
                if previous is not None:
                    asyncio.create_task(self.check(previous, current))  # noqa: RUF006 (result kept in self.last)
                previous = current
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                previous = None  # a gap: the next interval starts from a fresh snapshot
                logger.exception("log reconciliation could not read HAProxy's counters")
            await asyncio.sleep(max(0.0, self._interval_s - 1.0))

    def stats(self) -> dict[str, Any]:
        return {
            "reconciliations": self.reconciliations,
            "mismatched_intervals": self.mismatched_intervals,
            "missing_lines": self.missing_total,
            "errors": self.errors,
            "last": self.last.to_dict() if self.last else None,
        }


async def _sleep_until(moment: float, clock: Callable[[], float]) -> None:
    delay = moment - clock()
    if delay > 0:
        await asyncio.sleep(delay)


class HAProxyLossMonitor:
    """Polls HAProxy's `DroppedLogs` (lines it could not send) every `interval_s`; reports the growth."""

    def __init__(self, router: HAProxyStats, interval_s: float = 5.0) -> None:
        self._router = router
        self._interval_s = interval_s
        self._start: int | None = None
        self.current: int | None = None
        self.errors = 0
        self._task: asyncio.Task[None] | None = None

    async def poll(self) -> int | None:
        """Read DroppedLogs now; the growth since the first reading (None if never read)."""
        try:
            value = int((await self._router.show_info()).get("DroppedLogs", "0"))
        except Exception:
            self.errors += 1
            logger.warning("could not read DroppedLogs from HAProxy", exc_info=True)
            return self.dropped_logs
        if self._start is None or value < self._start:  # first reading, or HAProxy restarted
            self._start = value if self._start is None else 0
        self.current = value
        return self.dropped_logs

    @property
    def dropped_logs(self) -> int | None:
        if self.current is None or self._start is None:
            return None
        return self.current - self._start

    def start(self) -> None:
        self._task = asyncio.create_task(_every(self._interval_s, self.poll), name="collector-droppedlogs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def _every(interval_s: float, action: Callable[[], Awaitable[Any]]) -> None:
    while True:
        await action()
        await asyncio.sleep(interval_s)
