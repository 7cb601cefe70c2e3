"""Offline summary of an HAProxy log, per backend and server, in the spirit of `halog -srv`.

For `fm logs summarize FILE|-`. Lines may carry a syslog header or not, and may mix our compact format
with `option httplog`. Blank lines are skipped and not counted; HAProxy's own notices (server DOWN,
proxy started...) count as lines but neither as requests nor as rejected.

Quantiles are exact, not sketched: timers are whole milliseconds, so each server keeps a count per
distinct value. A quantile q is the value at rank floor(q * (n - 1)) of the sorted samples, the rank
rule DDSketch uses, so the two agree within the sketch's 1%. Timers of -1 (never measured) are left
out of that timer's quantiles; a quantile with no sample is None (null in JSON).

Speed (it should stay within 10x of halog): given a file object, the bytes under its text layer are
read in chunks of a few MB and counted by `fastpath` (httplog and compact lines alike) by raw field
values, so only distinct values are converted; quantiles are then computed with numpy from the
value counts. Any line the fast path cannot prove it reads like `parse_line` takes the slow path,
so the result is the same either way (a test compares them).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from fridaymorning.ingest.aggregate import status_class_index
from fridaymorning.ingest.fastpath import (
    BatchTally,
    DateCache,
    HeaderCache,
    RawCounts,
    httplog_key_fields,
    splittable,
    tally_compact_lines,
    tally_httplog_lines,
)
from fridaymorning.ingest.haproxy_log import is_failure, parse_event, parse_line
from fridaymorning.models import STATUS_CLASSES

if TYPE_CHECKING:
    from rich.table import Table

QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


class _ServerTally:
    """Running counts of one (backend, server)."""

    __slots__ = ("failed", "requests", "status", "ta_counts", "tr_counts")

    def __init__(self) -> None:
        self.requests = 0
        self.status = [0] * len(STATUS_CLASSES)
        self.failed = 0
        self.tr_counts: dict[int, int] = {}
        self.ta_counts: dict[int, int] = {}


_CHUNK_BYTES = 4 * 1024 * 1024


class _Summary:
    """Running totals of a summary."""

    def __init__(self) -> None:
        self.tallies: dict[tuple[str, str], _ServerTally] = {}
        self.lines = 0
        self.requests = 0
        self.rejected = 0
        self.headers = HeaderCache()
        self.dates = DateCache()

    def tally_of(self, backend: str, server: str) -> _ServerTally:
        tally = self.tallies.get((backend, server))
        if tally is None:
            tally = self.tallies[(backend, server)] = _ServerTally()
        return tally

    def add_line(self, raw_line: str) -> None:
        """The slow path: one line of any kind."""
        line = raw_line.rstrip("\r\n")
        if not line.strip():
            return
        self.lines += 1
        request = parse_line(line)
        if request is None:
            if parse_event(line) is None:
                self.rejected += 1
            return
        self.requests += 1
        _, backend, server, status, tr_ms, ta_ms, _, termination = request
        _count_request(self.tally_of(backend, server), status, tr_ms, ta_ms, termination, 1)

    def add_chunk(self, chunk: bytes) -> None:
        """Lines of a chunk of bytes ending at a line end: fast path if it can, else line by line."""
        if not (splittable(chunk) and self._add_fast(chunk)):
            for line in io.StringIO(chunk.decode("utf-8", "replace"), newline=None):
                self.add_line(line)

    def _add_fast(self, chunk: bytes) -> bool:
        """Count a `splittable` chunk by raw fields; False (nothing counted) if a field would not convert."""
        httplog = tally_httplog_lines(chunk.split(b"\n"), self.headers, self.dates)
        compact = tally_compact_lines(httplog.slow_lines, self.headers)
        converted = [(httplog_key_fields(key), count) for key, count in httplog.requests.items()]
        if any(fields is None for fields, _ in converted) or not _compact_convertible(compact):
            return False
        for fields, count in converted:
            assert fields is not None
            backend, server, status, tr_ms, ta_ms, termination = fields
            _count_request(self.tally_of(backend, server), status, tr_ms, ta_ms, termination, count)
        self._add_compact(compact)
        taken = sum(httplog.requests.values()) + sum(compact.requests.values())
        self.lines += taken
        self.requests += taken
        for line in compact.slow_lines:
            self.add_line(line.decode("ascii"))
        return True

    def _add_compact(self, compact: BatchTally) -> None:
        for (_second, backend, server, status, termination), count in compact.requests.items():
            tally = self.tally_of(backend.decode(), server.decode())
            _count_request(tally, int(status), -1, -1, termination.decode(), count, timers=False)
        for timers, attribute in ((compact.tr, "tr_counts"), (compact.ta, "ta_counts")):
            for (_second, backend, server, milliseconds), count in timers.items():
                value = int(milliseconds)
                if value >= 0:
                    counts = getattr(self.tally_of(backend.decode(), server.decode()), attribute)
                    counts[value] = counts.get(value, 0) + count

    def result(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "requests": self.requests,
            "rejected": self.rejected,
            "servers": [_server_summary(key, self.tallies[key]) for key in sorted(self.tallies)],
        }


def _compact_convertible(compact: BatchTally) -> bool:
    """Whether every field of the compact lines converts (RawCounts checks exactly that)."""
    return RawCounts().absorb(compact)


def summarize(lines: Iterable[str]) -> dict[str, Any]:
    """Summarise log lines into a JSON-ready dict::

        {"lines": N, "requests": R, "rejected": J,
         "servers": [{"backend": b, "server": s, "requests": n,
                      "status": {"1xx": .., "2xx": .., "3xx": .., "4xx": .., "5xx": .., "other": ..},
                      "failed": f,
                      "tr_ms": {"p50": .., "p90": .., "p99": ..},
                      "ta_ms": {"p50": .., "p90": .., "p99": ..}}]}

    `lines` may be any iterable of lines; a text file (or sys.stdin) is read through its binary
    buffer, much faster. Servers are sorted by backend, then server. Never raises on malformed
    lines: they are `rejected`.
    """
    summary = _Summary()
    binary = _binary_of(lines)
    if binary is not None:
        for chunk in _chunks(binary):
            summary.add_chunk(chunk)
    else:
        for line in lines:
            summary.add_line(line)
    return summary.result()


def _binary_of(lines: Iterable[str]) -> IO[bytes] | None:
    """The binary stream under a text file nothing was read from yet, or None."""
    buffer = getattr(lines, "buffer", None)
    if not isinstance(lines, io.TextIOWrapper) or buffer is None or lines.newlines is not None:
        return None
    try:
        if lines.tell() != 0:
            return None
    except (OSError, ValueError):
        pass  # a pipe (stdin): nothing can have been read through the text layer before us
    return buffer  # type: ignore[no-any-return]


def _chunks(binary: IO[bytes]) -> Iterator[bytes]:
    """The stream in chunks of about _CHUNK_BYTES, each ending at a line end (or at the end)."""
    pending = b""
    while True:
        block = binary.read(_CHUNK_BYTES)
        if not block:
            if pending:
                yield pending
            return
        data = pending + block
        end = data.rfind(b"\n")
        if end < 0:
            pending = data
            continue
        pending = data[end + 1 :]
        yield data[: end + 1]


def _count_request(
    tally: _ServerTally,
    status: int,
    tr_ms: int,
    ta_ms: int,
    termination: str,
    count: int,
    timers: bool = True,
) -> None:
    """Add `count` requests with the same fields to their server's tally."""
    tally.requests += count
    tally.status[status_class_index(status)] += count
    if is_failure(status, termination):
        tally.failed += count
    if not timers:
        return
    if tr_ms >= 0:
        tally.tr_counts[tr_ms] = tally.tr_counts.get(tr_ms, 0) + count
    if ta_ms >= 0:
        tally.ta_counts[ta_ms] = tally.ta_counts.get(ta_ms, 0) + count


def _server_summary(key: tuple[str, str], tally: _ServerTally) -> dict[str, Any]:
    """The JSON entry of one server."""
    backend, server = key
    return {
        "backend": backend,
        "server": server,
        "requests": tally.requests,
        "status": dict(zip(STATUS_CLASSES, tally.status, strict=True)),
        "failed": tally.failed,
        "tr_ms": quantiles_of_counts(tally.tr_counts),
        "ta_ms": quantiles_of_counts(tally.ta_counts),
    }


def quantiles_of_counts(counts: dict[int, int]) -> dict[str, int | None]:
    """p50/p90/p99 of samples given as value → count: the value at rank floor(q * (n - 1))."""
    if not counts:
        return {name: None for name, _ in QUANTILES}
    values = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    weights = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
    order = np.argsort(values, kind="stable")
    values, cumulative = values[order], np.cumsum(weights[order])
    total = int(cumulative[-1])
    if total == 0:
        return {name: None for name, _ in QUANTILES}
    result: dict[str, int | None] = {}
    for name, quantile in QUANTILES:
        rank = int(quantile * (total - 1))
        result[name] = int(values[np.searchsorted(cumulative, rank, side="right")])
    return result


def format_summary_table(summary: dict[str, Any]) -> Table:
    """A rich table of a `summarize` result: one row per server, timers as p50/p90/p99 in ms."""
    from rich.table import Table

    table = Table(
        title=f"{summary['requests']} requests in {summary['lines']} lines, {summary['rejected']} rejected"
    )
    for column in ("backend", "server"):
        table.add_column(column)
    for column in ("requests", *STATUS_CLASSES, "failed", "Tr ms p50/p90/p99", "Ta ms p50/p90/p99"):
        table.add_column(column, justify="right")
    for server in summary["servers"]:
        table.add_row(
            server["backend"],
            server["server"],
            str(server["requests"]),
            *(str(server["status"][name]) for name in STATUS_CLASSES),
            str(server["failed"]),
            _format_quantiles(server["tr_ms"]),
            _format_quantiles(server["ta_ms"]),
        )
    return table


def _format_quantiles(quantiles: dict[str, int | None]) -> str:
    """'12/40/95', with '-' for a quantile that has no sample."""
    return "/".join("-" if quantiles[name] is None else str(quantiles[name]) for name, _ in QUANTILES)
