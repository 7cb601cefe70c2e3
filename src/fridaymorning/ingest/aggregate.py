"""Per-second, per-version aggregation of parsed requests into `models.Window`s.

A window is keyed by (second, backend, version), where the version comes from the server name
(`models.version_of_server`: 'v2-1' → 'v2').

Requests that reached no server (server `<NOSRV>`: denied, bad requests, no server available) are kept
under the version `<NOSRV>`. They belong to neither the baseline nor the canary, so the judge never
compares them, yet a burst of 503s with no server available stays visible in the store.

On the hot path a request costs a few dict operations: timers are counted per distinct millisecond
value, and turned into DDSketches (`add(value, weight)`) once, when the window is flushed. The sketch
is the same as if each request had been added on its own.

Every request is also counted per (backend, server) since start (`logged_by_server`) and per
(instance, backend, server, accept second) for the last `server_seconds_kept_s` seconds
(`logged_between`), so the loss reconciler can compare them with HAProxy's own request counters, the
whole log's or one instance's. The instance is the host name of the line's syslog header ('' when
it has none: a single HAProxy); lines per instance since start are in `logged_by_instance`.

Batches parsed by `fastpath.tally_compact` arrive as counts by raw field values (`add_tally`): the
ints are made once per distinct value, and nothing is counted unless the whole batch converts.

A request that arrives for a second already flushed (its line came later than `lateness_s`: a slow
request, or a busy machine) is not dropped: it is counted in the oldest second still open, and
`late_requests` counts it, to tune the lateness. So each second is written once, and a second the judge
has read never changes afterwards: `fm replay` sees what each decision saw, and a request that took
seconds is judged as soon as its line arrives. The loss reconciler still counts it by its accept second.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from fridaymorning.ingest.fastpath import BatchTally
from fridaymorning.ingest.haproxy_log import NO_SERVER, Request, is_failure
from fridaymorning.models import STATUS_CLASSES, LatencySketch, Window, new_sketch, version_of_server

_OTHER_STATUS = len(STATUS_CLASSES) - 1
_NAME_CACHE_LIMIT = 4096

ServerKey = tuple[str, str]  # (backend, server)
WindowKey = tuple[int, str, str]  # (second, backend, version)


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


def _sketch_of(counts: dict[int, int]) -> LatencySketch:
    """A DDSketch holding each value of `counts` as many times as counted."""
    sketch = new_sketch()
    for value in sorted(counts):
        sketch.add(value, counts[value])
    return sketch


def finish_windows(popped: list[tuple[WindowKey, _OpenWindow]]) -> list[Window]:
    """Windows (with their sketches built) of windows removed by `Aggregator.pop_due`."""
    return [open_window.to_window(*key) for key, open_window in popped]


def _no_instance(_header: bytes) -> str:
    """No instance: every line counted as a single HAProxy's."""
    return ""


class Aggregator:
    """Accumulates parsed requests into windows keyed by (second, backend, version)."""

    def __init__(self, server_seconds_kept_s: int = 900) -> None:
        self._open: dict[WindowKey, _OpenWindow] = {}
        self._version_of: dict[str, str] = {NO_SERVER: NO_SERVER}
        self._names: dict[bytes, str] = {}
        # Seconds below this were already flushed: a request for one of them is late.
        self._flushed_below: float = float("-inf")
        self.late_requests = 0
        self.logged_by_server: dict[ServerKey, int] = {}
        self.logged_by_instance: dict[str, int] = {}
        self._by_server_second: dict[tuple[str, str, str, int], int] = {}
        self._server_seconds_kept_s = server_seconds_kept_s

    def add(self, request: Request, instance: str = "") -> None:
        """Count one request (a tuple from `haproxy_log.parse_line`), logged by `instance`."""
        second, backend, server, status, tr_ms, ta_ms, sent_bytes, termination = request
        window = self._window(second, backend, server, 1, instance)
        window.requests += 1
        window.status[status_class_index(status)] += 1
        if is_failure(status, termination):
            window.failed += 1
        window.bytes += sent_bytes
        if tr_ms >= 0:
            window.tr_counts[tr_ms] = window.tr_counts.get(tr_ms, 0) + 1
        if ta_ms >= 0:
            window.ta_counts[ta_ms] = window.ta_counts.get(ta_ms, 0) + 1

    def add_tally(self, tally: BatchTally, instance_of: Callable[[bytes], str] = _no_instance) -> bool:
        """Count the requests of a fast-path batch; False (and nothing counted) if a field is invalid.

        `instance_of` names the instance of a raw syslog header (`fastpath.HeaderCache.host`).
        """
        converted = _converted(tally, self._name, instance_of)
        if converted is None:
            return False
        requests, tr_counts, ta_counts, bytes_sent = converted
        for (instance, second, backend, server, status, termination), count in requests:
            window = self._window(second, backend, server, count, instance)
            window.requests += count
            window.status[status_class_index(status)] += count
            if is_failure(status, termination):
                window.failed += count
        for timers, attribute in ((tr_counts, "tr_counts"), (ta_counts, "ta_counts")):
            for (second, backend, server, milliseconds), count in timers:
                if milliseconds >= 0:
                    counts = getattr(self._window(second, backend, server, 0), attribute)
                    counts[milliseconds] = counts.get(milliseconds, 0) + count
        for (second, backend, server), total in bytes_sent:
            self._window(second, backend, server, 0).bytes += total
        return True

    def _window(
        self, second: int, backend: str, server: str, requests: int, instance: str = ""
    ) -> _OpenWindow:
        """The open window of a request's server; counts `requests` more for that server."""
        if requests:
            self._count_server(second, backend, server, requests, instance)
        if second < self._flushed_below:  # late: into the oldest second not flushed yet
            second = math.ceil(self._flushed_below)
        version = self._version_of.get(server)
        if version is None:
            if len(self._version_of) >= _NAME_CACHE_LIMIT:
                self._version_of = {NO_SERVER: NO_SERVER}
            version = self._version_of[server] = version_of_server(server)
        key = (second, backend, version)
        window = self._open.get(key)
        if window is None:
            window = self._open[key] = _OpenWindow()
        return window

    def _count_server(self, second: int, backend: str, server: str, requests: int, instance: str) -> None:
        server_key = (backend, server)
        self.logged_by_server[server_key] = self.logged_by_server.get(server_key, 0) + requests
        self.logged_by_instance[instance] = self.logged_by_instance.get(instance, 0) + requests
        second_key = (instance, backend, server, second)
        self._by_server_second[second_key] = self._by_server_second.get(second_key, 0) + requests
        if second < self._flushed_below:
            self.late_requests += requests

    def _name(self, raw: bytes) -> str:
        """A backend or server name as str, decoded once per distinct name."""
        name = self._names.get(raw)
        if name is None:
            if len(self._names) >= _NAME_CACHE_LIMIT:
                self._names.clear()
            name = self._names[raw] = raw.decode("ascii")
        return name

    def logged_between(
        self, first_second: int, end_second: int, instance: str | None = None
    ) -> dict[ServerKey, int]:
        """Requests per (backend, server) whose accept second is in [first_second, end_second):
        every line's, or only those `instance` logged (None: every instance)."""
        logged: dict[ServerKey, int] = {}
        for (host, backend, server, second), count in self._by_server_second.items():
            if first_second <= second < end_second and (instance is None or host == instance):
                logged[backend, server] = logged.get((backend, server), 0) + count
        return logged

    def flush(self, now_second: float, lateness_s: float) -> list[Window]:
        """Remove and return the windows whose second < now_second - lateness_s, oldest first."""
        return finish_windows(self.pop_due(now_second, lateness_s))

    def pop_due(self, now_second: float, lateness_s: float) -> list[tuple[WindowKey, _OpenWindow]]:
        """Remove the windows `flush` would return, unfinished: `finish_windows` makes them Windows.

        Lets the collector hold its lock only for the pop, and build sketches outside it.
        """
        cutoff = now_second - lateness_s
        self._flushed_below = max(self._flushed_below, cutoff)
        self._forget_server_seconds_before(now_second - self._server_seconds_kept_s)
        due = sorted(key for key in self._open if key[0] < cutoff)
        return [(key, self._open.pop(key)) for key in due]

    def _forget_server_seconds_before(self, oldest_kept: float) -> None:
        stale = [key for key in self._by_server_second if key[3] < oldest_kept]
        for key in stale:
            del self._by_server_second[key]

    def flush_all(self) -> list[Window]:
        """Remove and return every open window, oldest first (at shutdown)."""
        return finish_windows(self.pop_all())

    def pop_all(self) -> list[tuple[WindowKey, _OpenWindow]]:
        """Remove every open window, unfinished, oldest first."""
        return [(key, self._open.pop(key)) for key in sorted(self._open)]

    @property
    def open_windows(self) -> int:
        """How many windows are still open."""
        return len(self._open)


_ConvertedTally = tuple[
    list[tuple[tuple[str, int, str, str, int, str], int]],
    list[tuple[tuple[int, str, str, int], int]],
    list[tuple[tuple[int, str, str, int], int]],
    list[tuple[tuple[int, str, str], int]],
]


def _converted(
    tally: BatchTally, name: Callable[[bytes], str], instance_of: Callable[[bytes], str]
) -> _ConvertedTally | None:
    """The tally with ints and str names, or None if `parse_line` would reject one of its lines."""
    try:
        requests = [
            (
                (
                    instance_of(header),
                    int(second),
                    name(backend),
                    name(server),
                    int(status),
                    termination.decode(),
                ),
                count,
            )
            for (header, second, backend, server, status, termination), count in tally.requests.items()
        ]
        tr_counts = [
            ((int(second), name(backend), name(server), int(ms)), count)
            for (second, backend, server, ms), count in tally.tr.items()
        ]
        ta_counts = [
            ((int(second), name(backend), name(server), int(ms)), count)
            for (second, backend, server, ms), count in tally.ta.items()
        ]
    except ValueError:
        return None
    if any(len(key[5]) != 2 for key, _ in requests) or any(total < 0 for total in tally.bytes_sent.values()):
        return None
    bytes_sent = [
        ((int(second), name(backend), name(server)), total)
        for (second, backend, server), total in tally.bytes_sent.items()
    ]
    return requests, tr_counts, ta_counts, bytes_sent
