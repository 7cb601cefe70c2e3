"""The collector's hot path: batches of raw log bytes in, counted requests and open windows out.

Receivers (UDP thread, TCP protocol) only move bytes: they `submit` a batch (lines joined by b'\\n')
and return to receiving. One parser thread takes batches off a queue, parses them (fast path first,
see `fastpath`) and counts them into the `Aggregator` under a lock. The event loop's flush task holds
that lock only to pop finished windows; sketches are built outside it. So neither parsing nor
flushing ever waits on a receiver, and a receiver never waits on the event loop.

The queue is bounded in bytes. When it is full the UDP receiver waits (the kernel buffer then takes
the excess, and what it cannot take shows in the socket's drop counter), and the TCP receiver pauses
reading (HAProxy's ring then holds the lines, and reports what it drops as 'N events dropped').
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from fridaymorning.ingest.aggregate import Aggregator, ServerKey, WindowKey, _OpenWindow
from fridaymorning.ingest.fastpath import HeaderCache, RawCounts, splittable, tally_compact
from fridaymorning.ingest.haproxy_log import dropped_count, parse_event, parse_line, syslog_host

logger = logging.getLogger(__name__)

REJECTED_LINE_LIMIT = 500  # characters kept of each rejected line, for `stats()`
REJECTED_LINES_KEPT = 5


class CollectorStats:
    """Counters of the collector, updated by the parser thread (hence plain slotted attributes).

    Invariant, checked by a property test: lines == requests + events + rejected.
    """

    __slots__ = (
        "batches",
        "datagrams",
        "events",
        "fast_path_requests",
        "last_rejected",
        "lines",
        "receive_errors",
        "rejected",
        "requests",
        "ring_dropped",
        "sink_errors",
        "windows_dropped",
        "windows_flushed",
    )

    def __init__(self) -> None:
        self.batches = 0
        self.datagrams = 0
        self.lines = 0
        self.requests = 0
        self.fast_path_requests = 0
        self.events = 0
        self.rejected = 0
        self.ring_dropped = 0
        self.receive_errors = 0
        self.windows_flushed = 0
        self.windows_dropped = 0
        self.sink_errors = 0
        self.last_rejected: deque[str] = deque(maxlen=REJECTED_LINES_KEPT)


class IngestPipeline:
    """Parser thread, its bounded queue, and the aggregator it feeds (see the module docstring)."""

    def __init__(self, max_queued_bytes: int = 256 * 1024 * 1024) -> None:
        self.aggregator = Aggregator()
        self.counters = CollectorStats()
        self.lock = threading.Lock()
        self._headers = HeaderCache()
        self._raw = RawCounts()  # fast-path counts not yet in the aggregator: see `_materialize`
        self._queue: deque[tuple[bytes, int]] = deque()
        self._queued_bytes = 0
        self._max_queued_bytes = max_queued_bytes
        self._changed = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the parser thread."""
        self._closing = False
        self._thread = threading.Thread(target=self._parse_forever, name="fm-collector-parse", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Parse everything already submitted, then stop the parser thread (blocking)."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def submit(self, batch: bytes, datagrams: int, wait: bool = True) -> bool:
        """Queue a batch for parsing. When the queue is full: wait for room, or return False."""
        with self._changed:
            while self._queued_bytes >= self._max_queued_bytes and not self._closing:
                if not wait:
                    return False
                self._changed.wait(0.1)
            self._queue.append((batch, datagrams))
            self._queued_bytes += len(batch)
            self._changed.notify_all()
        return True

    @property
    def queued_bytes(self) -> int:
        """Bytes submitted and not parsed yet."""
        return self._queued_bytes

    def _parse_forever(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._closing:
                    self._changed.wait()
                if not self._queue:
                    return
                batch, datagrams = self._queue.popleft()
                self._queued_bytes -= len(batch)
                self._changed.notify_all()
            try:
                self.ingest(batch, datagrams)
            except Exception:  # a bug here must not silence the collector: count and go on
                self.counters.receive_errors += 1
                logger.exception("the collector could not ingest a batch of %d datagrams", datagrams)

    def ingest(self, batch: bytes, datagrams: int) -> None:
        """Parse and count one batch of `datagrams` datagrams (or TCP messages) joined by b'\\n'."""
        counters = self.counters
        counters.batches += 1
        counters.datagrams += datagrams
        if splittable(batch):
            tally = tally_compact(batch, self._headers)
            with self.lock:
                if self._raw.absorb(tally):
                    taken = tally.request_count
                    counters.lines += taken
                    counters.requests += taken
                    counters.fast_path_requests += taken
                    for raw_line in tally.slow_lines:
                        self._ingest_line(raw_line.decode("ascii"))
                    return
        text = batch.decode("utf-8", "replace")
        with self.lock:
            for line in text.splitlines():
                if line:
                    self._ingest_line(line)

    def _ingest_line(self, line: str) -> None:
        """The slow path for one line: any format, events, rejects. Caller holds the lock."""
        counters = self.counters
        counters.lines += 1
        request = parse_line(line)
        if request is not None:
            counters.requests += 1
            self.aggregator.add(request, syslog_host(line))
            return
        event = parse_event(line)
        if event is None:
            counters.rejected += 1
            counters.last_rejected.append(line[:REJECTED_LINE_LIMIT])
            return
        counters.events += 1
        if event[0] == "dropped":
            counters.ring_dropped += dropped_count(event[1])

    def _materialize(self) -> None:
        """Move the fast path's raw counts into the aggregator. Caller holds the lock."""
        if self._raw.requests:
            converted = self.aggregator.add_tally(self._raw, self._headers.host)
            assert converted, "RawCounts holds only convertible keys"
            self._raw.clear()

    def pop_due(self, now_second: float, lateness_s: float) -> list[tuple[WindowKey, _OpenWindow]]:
        """Windows that can no longer change, removed under the lock (finish them outside it)."""
        with self.lock:
            self._materialize()
            return self.aggregator.pop_due(now_second, lateness_s)

    def pop_all(self) -> list[tuple[WindowKey, _OpenWindow]]:
        """Every open window, removed under the lock."""
        with self.lock:
            self._materialize()
            return self.aggregator.pop_all()

    def logged_by_server(self) -> dict[ServerKey, int]:
        """Requests counted per (backend, server) since start (a copy)."""
        with self.lock:
            self._materialize()
            return dict(self.aggregator.logged_by_server)

    def logged_between(
        self, first_second: int, end_second: int, instance: str | None = None
    ) -> dict[ServerKey, int]:
        """Requests per (backend, server) with an accept second in [first_second, end_second), of
        every line or only of those whose syslog header names `instance` ('' for none)."""
        with self.lock:
            self._materialize()
            return self.aggregator.logged_between(first_second, end_second, instance)

    def logged_by_instance(self) -> dict[str, int]:
        """Requests counted per instance (syslog host name, '' for none) since start (a copy)."""
        with self.lock:
            self._materialize()
            return dict(self.aggregator.logged_by_instance)

    def counter_stats(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict."""
        counters = self.counters
        return {
            "datagrams": counters.datagrams,
            "batches": counters.batches,
            "lines": counters.lines,
            "requests": counters.requests,
            "fast_path_requests": counters.fast_path_requests,
            "events": counters.events,
            "rejected": counters.rejected,
            "ring_dropped": counters.ring_dropped,
            "late_requests": self.aggregator.late_requests,
            "receive_errors": counters.receive_errors,
            "open_windows": self.aggregator.open_windows,
            "unmerged_fast_path_keys": len(self._raw.requests),
            "queued_bytes": self._queued_bytes,
            "windows_flushed": counters.windows_flushed,
            "windows_dropped": counters.windows_dropped,
            "sink_errors": counters.sink_errors,
            "last_rejected": list(counters.last_rejected),
        }
