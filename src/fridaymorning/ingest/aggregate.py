"""Per-second, per-version aggregation of parsed requests into `models.Window`s.

A window is keyed by (second, backend, version), where the version comes from the server name
(`models.version_of_server`: 'v2-1' → 'v2').

Requests that reached no server (server `<NOSRV>`: denied, bad requests, no server available) are kept
under the version `<NOSRV>`. They belong to neither the baseline nor the canary, so the judge never
compares them, yet a burst of 503s with no server available stays visible in the store.

On the hot path a request costs a few dict operations: timers are counted per distinct millisecond
value, and turned into DDSketches (`add(value, weight)`) once, when the window is flushed. The sketch
is the same as if each request had been added on its own.

A request that arrives for a second already flushed (later than `lateness_s`) is not dropped: it
opens a new window for that second, flushed with the next batch, and the store merges windows that
share a key. `late_requests` counts them, to tune the lateness.
"""

from __future__ import annotations

from ddsketch import DDSketch

from fridaymorning.ingest.haproxy_log import NO_SERVER, Request, is_failure
from fridaymorning.models import STATUS_CLASSES, Window, new_sketch, version_of_server

_OTHER_STATUS = len(STATUS_CLASSES) - 1


def status_class_index(status: int) -> int:
    """Position of `status` in STATUS_CLASSES: 1xx..5xx, and 'other' for -1 or anything out of range."""
    if 100 <= status < 600:
        return status // 100 - 1
    return _OTHER_STATUS


class _OpenWindow:
    """A window still receiving requests; timers are value → count maps until it is flushed."""

    __slots__ = ("bytes", "failed", "requests", "status", "ta_counts", "tr_counts")

    def __init__(self) -> None:
        self.requests = 0
        self.status = [0] * len(STATUS_CLASSES)
        self.failed = 0
        self.bytes = 0
        self.tr_counts: dict[int, int] = {}
        self.ta_counts: dict[int, int] = {}

    def to_window(self, second: int, backend: str, version: str) -> Window:
        """The finished `Window`, with the timers turned into sketches."""
        return Window(
            backend=backend,
            version=version,
            second=second,
            requests=self.requests,
            status=self.status,
            failed=self.failed,
            bytes=self.bytes,
            tr=_sketch_of(self.tr_counts),
            ta=_sketch_of(self.ta_counts),
        )


def _sketch_of(counts: dict[int, int]) -> DDSketch:
    """A DDSketch holding each value of `counts` as many times as counted."""
    sketch = new_sketch()
    for value in sorted(counts):
        sketch.add(value, counts[value])
    return sketch


class Aggregator:
    """Accumulates parsed requests into windows keyed by (second, backend, version)."""

    def __init__(self) -> None:
        self._open: dict[tuple[int, str, str], _OpenWindow] = {}
        self._version_of: dict[str, str] = {NO_SERVER: NO_SERVER}
        # Seconds below this were already flushed: a request for one of them is late.
        self._flushed_below: float = float("-inf")
        self.late_requests = 0

    def add(self, request: Request) -> None:
        """Count one request (a tuple from `haproxy_log.parse_line`)."""
        second, backend, server, status, tr_ms, ta_ms, sent_bytes, termination = request
        version = self._version_of.get(server)
        if version is None:
            version = self._version_of[server] = version_of_server(server)
        key = (second, backend, version)
        window = self._open.get(key)
        if window is None:
            window = self._open[key] = _OpenWindow()
        if second < self._flushed_below:
            self.late_requests += 1
        window.requests += 1
        window.status[status_class_index(status)] += 1
        if is_failure(status, termination):
            window.failed += 1
        window.bytes += sent_bytes
        if tr_ms >= 0:
            window.tr_counts[tr_ms] = window.tr_counts.get(tr_ms, 0) + 1
        if ta_ms >= 0:
            window.ta_counts[ta_ms] = window.ta_counts.get(ta_ms, 0) + 1

    def flush(self, now_second: float, lateness_s: float) -> list[Window]:
        """Remove and return the windows whose second < now_second - lateness_s, oldest first."""
        cutoff = now_second - lateness_s
        self._flushed_below = max(self._flushed_below, cutoff)
        due = sorted(key for key in self._open if key[0] < cutoff)
        return [self._open.pop(key).to_window(*key) for key in due]

    def flush_all(self) -> list[Window]:
        """Remove and return every open window, oldest first (at shutdown)."""
        due = sorted(self._open)
        return [self._open.pop(key).to_window(*key) for key in due]

    @property
    def open_windows(self) -> int:
        """How many windows are still open."""
        return len(self._open)
