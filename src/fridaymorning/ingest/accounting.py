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
import json
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
    (a range because each snapshot brackets its second boundary; `expected_high` is None when a
    reload between the snapshots hid part of it). `missing` is how many lines are unaccounted for,
    `surplus` how many lines there are beyond the requests (a line counted twice); neither is negative.
    """

    backend: str
    server: str
    logged: int
    expected_low: int
    expected_high: int | None

    @property
    def missing(self) -> int:
        return missing_lines(self.logged, self.expected_low)

    @property
    def surplus(self) -> int:
        return surplus_lines(self.logged, self.expected_high)


def missing_lines(logged: int, expected_low: int) -> int:
    """The lines unaccounted for: how far `logged` falls short of the counter's least growth."""
    return max(0, expected_low - logged)


def surplus_lines(logged: int, expected_high: int | None) -> int:
    """The lines beyond the requests counted; 0 when the counter's growth has no upper bound (a reload)."""
    return 0 if expected_high is None else max(0, logged - expected_high)


CounterReading = int | tuple[int, int]  # exact, or (read before the boundary, read after it)
Growth = tuple[int, int | None]  # (low, high) of a counter's growth; high None: unknown (a reload)


def reconcile(
    logged: Mapping[ServerKey, int],
    counters_before: Mapping[ServerKey, CounterReading],
    counters_after: Mapping[ServerKey, CounterReading],
) -> list[Mismatch]:
    """Servers whose logged requests differ from the growth of HAProxy's request counter.

    `logged[(backend, server)]` counts the lines of requests accepted between two second boundaries
    B1 and B2. `counters_before`/`counters_after` are HAProxy's cumulative per-server request counters
    at B1 and B2 (read from the same worker), each either exact or a pair (read just before the
    boundary, read just after it): the true value at the boundary lies between the two, so the
    expected growth is a range, and a mismatch is reported only when `logged` is outside it. No
    tolerance is guessed: with no traffic at the boundaries the range is a single number, and the
    check is exact.

    A server missing from `counters_after` (deleted meanwhile) cannot be checked and is skipped; one
    missing from `counters_before` (added meanwhile) started at 0. Logged servers HAProxy has no
    counter for (`<NOSRV>`) are skipped. Sorted by backend, server.
    """
    growth = {key: _growth(counters_before.get(key, 0), after) for key, after in counters_after.items()}
    return reconcile_growth(logged, growth)


def reconcile_growth(logged: Mapping[ServerKey, int], growth: Mapping[ServerKey, Growth]) -> list[Mismatch]:
    """Servers whose logged requests fall outside the expected growth range (see `reconcile`)."""
    mismatches = []
    for key in sorted(growth):
        low, high = growth[key]
        count = logged.get(key, 0)
        if count < low or (high is not None and count > high):
            mismatches.append(Mismatch(key[0], key[1], count, low, high))
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
class Snapshot:
    """HAProxy's counters bracketing the second boundary `second`, all read from worker `worker`.

    `worker` is the pid `show info` named before and after the readings (None when it names none).
    """

    second: int
    counters: dict[ServerKey, tuple[int, int]]
    worker: int | None = None

    def to_dict(self) -> dict[str, Any]:
        rows = [[backend, server, low, high] for (backend, server), (low, high) in self.counters.items()]
        return {"second": self.second, "worker": self.worker, "counters": rows}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        counters = {(str(b), str(s)): (int(low), int(high)) for b, s, low, high in data["counters"]}
        worker = data.get("worker")
        return cls(int(data["second"]), counters, int(worker) if worker is not None else None)


def counters_reset(first: Snapshot, last: Snapshot) -> bool:
    """True when HAProxy's counters restarted between two snapshots.

    A reload (or a restart) starts a new worker whose counters begin at 0. It shows as another worker
    pid, or, where the pid is unknown, as a counter that went down.
    """
    if first.worker is not None and last.worker is not None:
        return first.worker != last.worker
    return any(
        reading[1] < first.counters[key][0] for key, reading in last.counters.items() if key in first.counters
    )


def interval_growth(
    first: Snapshot, last: Snapshot, old_worker_last: Mapping[ServerKey, int] | None = None
) -> dict[ServerKey, Growth]:
    """The range of each server's request count between two snapshots, across a reload too.

    Without a reset, it is the growth of the counter (see `reconcile`). Across a reset, HAProxy's
    counters cannot say how many requests the old worker served after it was last read, since they
    died with it: the range is open above (high None), and its low end is what is known for sure,
    the new worker's count (it started at 0 after `first`), plus the old worker's growth from `first`
    to `old_worker_last`, its last reading (when one was taken after `first`).
    """
    if not counters_reset(first, last):
        return {key: _growth(first.counters.get(key, 0), reading) for key, reading in last.counters.items()}
    growth: dict[ServerKey, Growth] = {}
    for key, (new_low, _) in last.counters.items():
        old_low = 0
        if old_worker_last is not None and key in old_worker_last and key in first.counters:
            old_low = max(0, old_worker_last[key] - first.counters[key][1])
        growth[key] = (new_low + old_low, None)
    return growth


def total_growth(growth: Mapping[ServerKey, Growth]) -> Growth:
    """The sum of per-server growth ranges (high None when any is open)."""
    highs = [high for _, high in growth.values()]
    low = sum(low for low, _ in growth.values())
    return low, None if None in highs else sum(high for high in highs if high is not None)


@dataclass(slots=True)
class Reconciliation:
    """The result of one reconciled interval [first_second, end_second)."""

    first_second: int
    end_second: int
    logged: int
    expected_low: int
    expected_high: int | None
    mismatches: list[Mismatch]
    reset: bool = False  # HAProxy's counters restarted (a reload) between the two snapshots

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_second": self.first_second,
            "end_second": self.end_second,
            "logged": self.logged,
            "expected_low": self.expected_low,
            "expected_high": self.expected_high,
            "reset": self.reset,
            "mismatches": [
                {
                    "backend": item.backend,
                    "server": item.server,
                    "logged": item.logged,
                    "expected_low": item.expected_low,
                    "expected_high": item.expected_high,
                    "missing": item.missing,
                    "surplus": item.surplus,
                }
                for item in self.mismatches
            ],
        }


class Ledger:
    """Missing and surplus lines summed over reconciled intervals, never negative.

    Consecutive intervals form a segment, checked as a whole: `missing` is what the segment's logged
    lines lack against the sum of its intervals' expected growth. So a keep-alive request logged on
    one side of a boundary and counted on the other (see docs/collector.md) cancels out instead of
    showing as a loss, and the few ms of traffic that blur each boundary do not add up. Only a gap
    (HAProxy's counters could not be read) starts a new segment. An interval across a reload is open
    above; from then on the segment's surplus is unknown (not counted), and the requests the old
    worker served after its last reading (at most `poll_s` of traffic) can hide as many lost lines.
    """

    def __init__(self) -> None:
        self.closed_missing = 0
        self.closed_surplus = 0
        self._end: int | None = None  # end second of the open segment
        self._low = 0
        self._high: int | None = 0
        self._logged = 0

    def add(self, result: Reconciliation) -> None:
        if result.first_second != self._end:
            self._close()
        self._low += result.expected_low
        if self._high is not None:
            self._high = None if result.expected_high is None else self._high + result.expected_high
        self._logged += result.logged
        self._end = result.end_second

    def _close(self) -> None:
        self.closed_missing += missing_lines(self._logged, self._low)
        self.closed_surplus += surplus_lines(self._logged, self._high)
        self._low, self._high, self._logged, self._end = 0, 0, 0, None

    @property
    def missing(self) -> int:
        return self.closed_missing + missing_lines(self._logged, self._low)

    @property
    def surplus(self) -> int:
        return self.closed_surplus + surplus_lines(self._logged, self._high)


StoredCount = Callable[[int, int], int | None]  # requests stored with a second in [first, end), if known


class Reconciler:
    """Once per `interval_s`, checks that every request HAProxy counted was logged (see `reconcile`).

    Each snapshot brackets a second boundary B: `show stat` is read once finishing before B and once
    starting after B. Requests accepted before B are in the first reading at the latest, those
    accepted after B only in the second. The interval between two snapshots is reconciled
    `settle_s` after its end (the collector's lateness plus transit), so late lines are in.

    Reloads: each snapshot notes the worker that answered (`show info` Pid, read before and after),
    and the counters are read again every `poll_s` between snapshots, so an interval across a reload
    knows the old worker's last count (see `interval_growth`).

    Restarts of the collector: with `state_path`, the last snapshot is kept in that file. A collector
    started later reconciles the interval from that snapshot to its own first one against the
    requests the store holds for it (`stored`, e.g. SQLite totals): what HAProxy counted then and the
    store lacks was lost while no collector ran, and is reported as `lost_across_restart`.

    Assumes each request is counted once by HAProxy and logged once, with its accept time: retries
    redispatched to another server would count on two servers.
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
        poll_s: float = 1.0,
        state_path: Path | None = None,
        stored: StoredCount | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._router = router
        self._collector = collector
        self._interval_s = interval_s
        self._settle_s = settle_s
        self._backends = backends
        self._margin_s = margin_s
        self._poll_s = poll_s
        self._state_path = state_path
        self._stored = stored
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._last_reading: dict[int, dict[ServerKey, int]] = {}  # worker pid → its latest counters
        self.ledger = Ledger()
        self.reconciliations = 0
        self.mismatched_intervals = 0
        self.resets = 0
        self.lost_across_restart = 0
        self.lost_across_restart_max: int | None = 0  # None: unknown (a reload while none ran)
        self.restart_checks = 0
        self.last: Reconciliation | None = None
        self.errors = 0

    @property
    def missing_total(self) -> int:
        return self.ledger.missing

    async def snapshot(self) -> Snapshot:
        """HAProxy's counters read just before and just after the next second boundary, from one worker."""
        while True:
            worker = await self._worker()
            while True:
                boundary = int(self._clock()) + 1
                await _sleep_until(boundary - self._margin_s, self._clock)
                before = await self._counters()
                if self._clock() < boundary:  # the reading finished before the boundary: usable
                    break
            await _sleep_until(boundary + self._margin_s / 2, self._clock)
            after = await self._counters()
            if await self._worker() == worker:  # else a reload came between the readings: again
                break
        keys = set(before) | set(after)
        self._note(worker, after)
        return Snapshot(boundary, {key: (before.get(key, 0), after.get(key, 0)) for key in keys}, worker)

    async def poll(self) -> None:
        """Read the counters now, so that a reload before the next snapshot knows the old worker's count."""
        worker = await self._worker()
        counters = await self._counters()
        if worker is not None and await self._worker() == worker:
            self._note(worker, counters)

    def _note(self, worker: int | None, counters: dict[ServerKey, int]) -> None:
        if worker is None:
            return
        self._last_reading[worker] = counters
        for old in list(self._last_reading)[:-3]:  # the current worker and the few before it
            del self._last_reading[old]

    async def check(self, first: Snapshot, last: Snapshot) -> Reconciliation:
        """Reconcile the interval between two snapshots, once its lines have had time to arrive."""
        await _sleep_until(last.second + self._settle_s, self._clock)
        old_worker = self._last_reading.get(first.worker) if first.worker is not None else None
        growth = interval_growth(first, last, old_worker)
        logged = self._collector.logged_between(first.second, last.second)
        low, high = total_growth(growth)
        result = Reconciliation(
            first.second,
            last.second,
            sum(logged.get(key, 0) for key in growth),
            low,
            high,
            reconcile_growth(logged, growth),
            counters_reset(first, last),
        )
        self._record(result)
        return result

    def _record(self, result: Reconciliation) -> None:
        self.reconciliations += 1
        self.last = result
        missing_before = self.ledger.missing
        self.ledger.add(result)
        self.resets += result.reset
        if result.mismatches:
            self.mismatched_intervals += 1
            # A mismatch the segment makes up for (a keep-alive request dated before a boundary) is
            # no news; lines missing from the segment as a whole are.
            level = logging.WARNING if self.ledger.missing > missing_before else logging.INFO
            logger.log(level, "log reconciliation found mismatches: %s", result.to_dict()["mismatches"])

    async def check_restart(self, previous: Snapshot, first: Snapshot) -> int | None:
        """Lines lost between the last snapshot of an earlier collector and our first one, or None.

        The store holds what the earlier collector flushed and what we logged since; HAProxy's
        counters say how many requests there were (a lower bound across a reload or a restart of
        HAProxy). The difference was never stored: it is added to `lost_across_restart`. The low end
        of HAProxy's range is used, so nothing is claimed lost that may have been stored; the high
        end's difference goes to `lost_across_restart_max` (the requests counted while a snapshot was
        being read could be either; with a reload in between, the high end is unknown).
        """
        if self._stored is None or first.second <= previous.second:
            return None
        await _sleep_until(first.second + self._settle_s, self._clock)
        stored = await asyncio.to_thread(self._stored, previous.second, first.second)
        if stored is None:
            return None
        low, high = total_growth(interval_growth(previous, first))
        lost = max(0, low - stored)
        self.restart_checks += 1
        self.lost_across_restart += lost
        if self.lost_across_restart_max is not None:
            self.lost_across_restart_max = (
                None if high is None else self.lost_across_restart_max + max(lost, high - stored)
            )
        if lost:
            logger.warning(
                "%d requests HAProxy counted in [%d, %d) were never stored: lost while no collector ran",
                lost,
                previous.second,
                first.second,
            )
        return lost

    async def _settle(self, previous: Snapshot | None, current: Snapshot) -> None:
        """Once the lines before `current` are in, check the interval; then keep a snapshot for a
        successor. It keeps `previous`, an interval older: a successor looks only after the kept
        snapshot, and lines of the seconds just before `current` may still be in this collector's
        memory or socket when it dies (a loaded machine delays them by seconds)."""
        if previous is not None:
            await self.check(previous, current)
        else:
            await _sleep_until(current.second + self._settle_s, self._clock)
        self.save_state(previous or current)

    async def _counters(self) -> dict[ServerKey, int]:
        return server_counters(await self._router.show_stat(), self._backends)

    async def _worker(self) -> int | None:
        pid = (await self._router.show_info()).get("Pid", "")
        return int(pid) if pid.isdigit() else None

    def load_state(self) -> Snapshot | None:
        """The snapshot an earlier collector kept in `state_path`, and its loss totals (None if none)."""
        if self._state_path is None:
            return None
        try:
            data = json.loads(self._state_path.read_text(encoding="utf-8"))
            snapshot = Snapshot.from_dict(data["snapshot"])
            self.lost_across_restart = int(data.get("lost_across_restart", 0))
            kept_max = data.get("lost_across_restart_max", self.lost_across_restart)
            self.lost_across_restart_max = None if kept_max is None else int(kept_max)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return snapshot

    def save_state(self, snapshot: Snapshot) -> None:
        """Keep `snapshot` (and the loss found across restarts) for the next collector."""
        if self._state_path is None:
            return
        data = {
            "snapshot": snapshot.to_dict(),
            "lost_across_restart": self.lost_across_restart,
            "lost_across_restart_max": self.lost_across_restart_max,
        }
        try:
            write_atomically(self._state_path, json.dumps(data))
        except OSError:
            logger.warning("cannot keep the reconciled counters in %s", self._state_path, exc_info=True)

    def start(self) -> None:
        """Run forever in a task (call from the event loop)."""
        self._task = asyncio.create_task(self._run(), name="collector-reconcile")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        previous: Snapshot | None = None
        earlier = self.load_state()
        while True:
            try:
                current = await self.snapshot()
                if earlier is not None:
                    await self.check_restart(earlier, current)
                    self.save_state(current)  # checked up to here: never counted twice
                    earlier = None
                asyncio.create_task(self._settle(previous, current))  # noqa: RUF006 (result kept in self.last)
                previous = current
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                previous = None  # a gap: the next interval starts from a fresh snapshot
                logger.exception("log reconciliation could not read HAProxy's counters")
            await self._poll_until(self._clock() + max(0.0, self._interval_s - 1.0))

    async def _poll_until(self, moment: float) -> None:
        """Wait until `moment`, reading the counters every `poll_s` meanwhile (errors are not fatal)."""
        while self._clock() < moment:
            await _sleep_until(min(moment, self._clock() + self._poll_s), self._clock)
            with contextlib.suppress(Exception):
                await self.poll()

    def stats(self) -> dict[str, Any]:
        return {
            "reconciliations": self.reconciliations,
            "mismatched_intervals": self.mismatched_intervals,
            "missing_lines": self.ledger.missing,
            "surplus_lines": self.ledger.surplus,
            "counter_resets": self.resets,
            "lost_across_restart": self.lost_across_restart,
            "lost_across_restart_max": self.lost_across_restart_max,
            "restart_checks": self.restart_checks,
            "errors": self.errors,
            "last": self.last.to_dict() if self.last else None,
        }


async def _sleep_until(moment: float, clock: Callable[[], float]) -> None:
    delay = moment - clock()
    if delay > 0:
        await asyncio.sleep(delay)


def write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file and a rename: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


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
        await cancel_and_wait(self._task)
        self._task = None


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (if there is one) and return once it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _every(interval_s: float, action: Callable[[], Awaitable[Any]]) -> None:
    while True:
        await action()
        await asyncio.sleep(interval_s)
