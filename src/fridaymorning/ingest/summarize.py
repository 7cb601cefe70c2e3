"""Offline summary of an HAProxy log, per backend and server, in the spirit of `halog -srv`.

For `fm logs summarize FILE|-`. Lines may carry a syslog header or not, and may mix our compact format
with `option httplog`. Blank lines are skipped and not counted; HAProxy's own notices (server DOWN,
proxy started...) count as lines but neither as requests nor as rejected.

Quantiles are exact, not sketched: timers are whole milliseconds, so each server keeps a count per
distinct value. A quantile q is the value at rank floor(q * (n - 1)) of the sorted samples, the rank
rule DDSketch uses, so the two agree within the sketch's 1%. Timers of -1 (never measured) are left
out of that timer's quantiles; a quantile with no sample is None (null in JSON).

Speed (it should stay within 10x of halog): given a file object, the bytes under its text layer are
read in chunks of 4 MB. `bulk.BulkReader` reads the httplog lines of a chunk all at once with
numpy; the lines it leaves go through `fastpath` (compact lines, counted by raw field values), and
what remains through `parse_line`. Counts are summed per server with numpy, timers as a dense
histogram of small values plus sparse (value, count) pairs, and quantiles are computed from those.
Every line the fast paths cannot prove they read like `parse_line` takes the exact path, so the
result is the same either way (tests compare them).
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fridaymorning.ingest.aggregate import status_class_index
from fridaymorning.ingest.bulk import HEAD, PAD, TAIL, BulkReader, HttplogColumns
from fridaymorning.ingest.fastpath import (
    BatchTally,
    DateCache,
    HeaderCache,
    RawCounts,
    tally_compact_lines,
)
from fridaymorning.ingest.haproxy_log import is_failure, parse_event, parse_line
from fridaymorning.models import STATUS_CLASSES

if TYPE_CHECKING:
    from rich.table import Table

QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


_DENSE = 2048  # timer values below this many ms are counted in a dense histogram per server
_DENSE_SERVERS = 256  # above this many servers in one chunk, every value is counted sparsely
_STATUS_COUNT = len(STATUS_CLASSES)


class _TimerCounts:
    """Counts of one timer's values (ms, -1 excluded): a dict from the exact path, a dense histogram
    of values below _DENSE and sparse (values, counts) arrays from the bulk path."""

    __slots__ = ("counts", "dense", "sparse")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.dense: npt.NDArray[np.int64] | None = None
        self.sparse: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []

    def add_dense(self, histogram: npt.NDArray[np.int64]) -> None:
        if self.dense is None:
            self.dense = histogram.copy()
        else:
            self.dense += histogram

    def add_values(self, values: npt.NDArray[np.int64]) -> None:
        distinct, counts = np.unique(values, return_counts=True)
        self.sparse.append((distinct, counts.astype(np.int64)))

    def quantiles(self) -> dict[str, int | None]:
        if not _fits_int64(self.counts):
            counts = dict(self.counts)
            for values, weights in self._arrays():
                for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
                    counts[value] = counts.get(value, 0) + weight
            return _python_quantiles(counts)
        arrays = self._arrays()
        values = np.concatenate([values for values, _ in arrays])
        return _weighted_quantiles(values, np.concatenate([weights for _, weights in arrays]))

    def _arrays(self) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
        """(values, counts) pairs of everything counted, the exact path's dict first if it fits int64."""
        arrays = []
        if _fits_int64(self.counts):
            arrays.append(
                (
                    np.fromiter(self.counts.keys(), dtype=np.int64, count=len(self.counts)),
                    np.fromiter(self.counts.values(), dtype=np.int64, count=len(self.counts)),
                )
            )
        if self.dense is not None:
            present = np.flatnonzero(self.dense)
            arrays.append((present.astype(np.int64), self.dense[present]))
        arrays.extend(self.sparse)
        return arrays


class _ServerTally:
    """Running counts of one (backend, server)."""

    __slots__ = ("failed", "requests", "status", "ta", "tr")

    def __init__(self) -> None:
        self.requests = 0
        self.status = [0] * _STATUS_COUNT
        self.failed = 0
        self.tr = _TimerCounts()
        self.ta = _TimerCounts()

    @property
    def tr_counts(self) -> dict[int, int]:
        return self.tr.counts

    @property
    def ta_counts(self) -> dict[int, int]:
        return self.ta.counts


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
        self.reader = BulkReader(self.headers, self.dates)

    def tally_of(self, backend: str, server: str) -> _ServerTally:
        tally = self.tallies.get((backend, server))
        if tally is None:
            tally = self.tallies[(backend, server)] = _ServerTally()
        return tally

    def add_line(self, raw_line: str) -> None:
        """The exact path: one line of any kind."""
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

    def add_padded(self, padded: bytes | bytearray) -> None:
        """The lines of a chunk, each ending in '\\n', between bulk.HEAD and bulk.TAIL."""
        columns = self.reader.scan(padded)
        self.add_columns(columns)
        self.add_lines(columns.rest)
        for line in columns.dirty:
            # Decoded like the text layer of `fm logs summarize` (UTF-8, invalid bytes replaced), with
            # its universal newlines: '\r' ends a line too.
            for text_line in io.StringIO(line.decode("utf-8", "replace"), newline=None):
                self.add_line(text_line)

    def add_columns(self, columns: HttplogColumns) -> None:
        """Add the requests read by `bulk.BulkReader.scan`."""
        taken = len(columns.target)
        if not taken:
            return
        self.lines += taken
        self.requests += taken
        groups = len(columns.targets)
        target, status = columns.target, columns.status
        requests = np.bincount(target, minlength=groups).tolist()
        tallies = [
            self.tally_of(*name.decode("ascii").split("/", 1)) if count else _ServerTally()
            for name, count in zip(columns.targets, requests, strict=True)
        ]
        in_range = (status >= 100) & (status < 600)
        classes = np.where(in_range, status // 100 - 1, _STATUS_COUNT - 1)
        status_counts = np.bincount(target * _STATUS_COUNT + classes, minlength=groups * _STATUS_COUNT)
        failed = (in_range & (status >= 500)) | columns.blamed
        failed_counts = np.bincount(target[failed], minlength=groups).tolist()
        for group, (tally, counts) in enumerate(
            zip(tallies, status_counts.reshape(groups, _STATUS_COUNT).tolist(), strict=True)
        ):
            tally.requests += requests[group]
            tally.status = [mine + theirs for mine, theirs in zip(tally.status, counts, strict=True)]
            tally.failed += failed_counts[group]
        for values, timer_of in ((columns.tr, _tr_of), (columns.ta, _ta_of)):
            measured = values >= 0
            dense = measured & (values < _DENSE) if groups <= _DENSE_SERVERS else np.zeros_like(measured)
            if dense.any():
                histograms = np.bincount(target[dense] * _DENSE + values[dense], minlength=groups * _DENSE)
                histograms = histograms.reshape(groups, _DENSE)
                for group in np.flatnonzero(histograms.any(axis=1)).tolist():
                    timer_of(tallies[group]).add_dense(histograms[group])
            sparse = measured & ~dense
            if sparse.any():
                groups_of, values_of = target[sparse], values[sparse]
                order = np.argsort(groups_of, kind="stable")
                groups_of, values_of = groups_of[order], values_of[order]
                bounds = np.flatnonzero(np.diff(groups_of)) + 1
                for part_groups, part_values in zip(
                    np.split(groups_of, bounds), np.split(values_of, bounds), strict=True
                ):
                    timer_of(tallies[int(part_groups[0])]).add_values(part_values)

    def add_lines(self, lines: list[bytes]) -> None:
        """Non-empty ASCII lines without '\\r': compact lines by the fast path if it can, others exactly."""
        if not lines:
            return
        compact = tally_compact_lines(lines, self.headers)
        if not _compact_convertible(compact):
            for line in lines:
                self.add_line(line.decode("ascii"))
            return
        self._add_compact(compact)
        taken = sum(compact.requests.values())
        self.lines += taken
        self.requests += taken
        for line in compact.slow_lines:
            self.add_line(line.decode("ascii"))

    def _add_compact(self, compact: BatchTally) -> None:
        for (_header, _second, backend, server, status, termination), count in compact.requests.items():
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


def _tr_of(tally: _ServerTally) -> _TimerCounts:
    return tally.tr


def _ta_of(tally: _ServerTally) -> _TimerCounts:
    return tally.ta


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
    binary = _binary_of(lines)
    summary = _Summary()
    if binary is not None:
        for padded in _padded_chunks(binary):
            summary.add_padded(padded)
    else:
        for line in lines:
            summary.add_line(line)
    return summary.result()


def _binary_of(lines: Iterable[str]) -> io.BufferedIOBase | None:
    """The binary stream under a text file nothing was read from yet, or None."""
    buffer = getattr(lines, "buffer", None)
    if not isinstance(lines, io.TextIOWrapper) or buffer is None or lines.newlines is not None:
        return None
    if codecs.lookup(lines.encoding).name != "utf-8" or not hasattr(buffer, "readinto"):
        return None  # the fast paths read bytes as UTF-8 would decode them, in place
    try:
        if lines.tell() != 0:
            return None
    except (OSError, ValueError):
        pass  # a pipe (stdin): nothing can have been read through the text layer before us
    return buffer  # type: ignore[no-any-return]


def _padded_chunks(binary: io.BufferedIOBase) -> Iterator[bytearray]:
    """The stream in chunks of whole lines (about _CHUNK_BYTES), each line ending in '\\n' (one is added
    to a last line without it), between bulk.HEAD and bulk.TAIL.

    Read in place into one buffer, reused (fresh memory costs page faults): only the unfinished line
    at the end of a read is copied. Each chunk is valid until the next one is asked for.
    """
    buffer = bytearray(HEAD)
    pending = b""
    while True:
        start = PAD + len(pending)
        size = start + _CHUNK_BYTES + PAD
        if len(buffer) < size:
            buffer.extend(bytes(size - len(buffer)))
        buffer[PAD:start] = pending
        read = binary.readinto(memoryview(buffer)[start : start + _CHUNK_BYTES])
        if not read:
            if pending:
                buffer[start : start + 1 + PAD] = b"\n" + TAIL
                del buffer[start + 1 + PAD :]
                yield buffer
            return
        filled = start + read
        end = buffer.rfind(b"\n", start, filled)
        if end < 0:
            pending = bytes(buffer[PAD:filled])
            continue
        pending = bytes(buffer[end + 1 : filled])
        buffer[end + 1 : end + 1 + PAD] = TAIL
        del buffer[end + 1 + PAD :]
        yield buffer


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
        tally.tr.counts[tr_ms] = tally.tr.counts.get(tr_ms, 0) + count
    if ta_ms >= 0:
        tally.ta.counts[ta_ms] = tally.ta.counts.get(ta_ms, 0) + count


def _server_summary(key: tuple[str, str], tally: _ServerTally) -> dict[str, Any]:
    """The JSON entry of one server."""
    backend, server = key
    return {
        "backend": backend,
        "server": server,
        "requests": tally.requests,
        "status": dict(zip(STATUS_CLASSES, tally.status, strict=True)),
        "failed": tally.failed,
        "tr_ms": tally.tr.quantiles(),
        "ta_ms": tally.ta.quantiles(),
    }


def quantiles_of_counts(counts: dict[int, int]) -> dict[str, int | None]:
    """p50/p90/p99 of samples given as value → count: the value at rank floor(q * (n - 1))."""
    if not _fits_int64(counts):
        return _python_quantiles(counts)
    values = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    weights = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
    return _weighted_quantiles(values, weights)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _fits_int64(counts: dict[int, int]) -> bool:
    """Whether numpy can hold the values (a timer of 20 digits parses, but not as an int64)."""
    return not counts or (min(counts) >= _INT64_MIN and max(counts) <= _INT64_MAX)


def _python_quantiles(counts: dict[int, int]) -> dict[str, int | None]:
    """`quantiles_of_counts` in plain Python, for values beyond int64."""
    total = sum(counts.values())
    if not total:
        return {name: None for name, _ in QUANTILES}
    result: dict[str, int | None] = {}
    for name, quantile in QUANTILES:
        rank, seen = int(quantile * (total - 1)), 0
        for value in sorted(counts):
            seen += counts[value]
            if seen > rank:
                result[name] = value
                break
    return result


def _weighted_quantiles(
    values: npt.NDArray[np.int64], weights: npt.NDArray[np.int64]
) -> dict[str, int | None]:
    """`quantiles_of_counts` of values (repeats allowed) with their counts."""
    if not len(values):
        return {name: None for name, _ in QUANTILES}
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
