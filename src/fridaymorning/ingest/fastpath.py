"""Batch parsing of log lines at line rate: raw bytes in, counts keyed by raw fields out.

`haproxy_log.parse_line` builds one tuple per request and converts each field to an int: about
5 µs a line. Here a whole batch of lines (bytes joined by newlines) is split with C-level bytes
methods and *counted* by raw field values; ints are made once per distinct value, when the batch is
merged (`aggregate.Aggregator.add_tally`, `summarize`). About 1.8 µs a line for the compact format.

The fast path is optimistic and never changes a result. It takes only lines it can prove
`parse_line` would read the same way, and hands every other line back for the slow path:

* the batch must be ASCII with no line breaks other than '\\n' (`str.splitlines` also splits on
  '\\r', '\\v', '\\f', '\\x1c'-'\\x1e'...), so bytes lines are exactly the slow path's str lines;
* the syslog header in front of a message is checked by `split_syslog` once per distinct header
  (the header holds the second, so there are a few per second), cached with its host name;
* requests are counted by their raw header too, which costs next to nothing (the header's hash is
  already computed for the cache lookup): the header names the instance of a fleet, turned into its
  host name once per distinct key, when the counts are merged;
* numeric fields become ints with `int(bytes)`, which on ASCII reads exactly what `int(str)` reads;
  the conversion happens at merge time, and a field that fails it makes `BatchTally.valid()` false:
  the caller then discards the tally and runs the slow path on the whole batch.

A property test checks that a collector fed through this module counts exactly what the slow path
counts, on random and mutated lines.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from fridaymorning.ingest.haproxy_log import _local_date_to_epoch, split_syslog, syslog_host

COMPACT_SEPARATOR = b": fm1 "  # end of the syslog header, start of a compact message
# Bytes that str.splitlines() treats as line breaks (besides '\n'); their presence sends the batch
# to the slow path, so that bytes.split(b"\n") and str.splitlines() agree.
_OTHER_LINE_BREAKS = (b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e")
_HEADER_CACHE_LIMIT = 4096
_SYNTHETIC_MESSAGE = "fm1 x"

# (syslog header, second, backend, server, status, termination)
RequestKey = tuple[bytes, bytes, bytes, bytes, bytes, bytes]
TimerKey = tuple[bytes, bytes, bytes, bytes]  # (second, backend, server, milliseconds)
ServerSecond = tuple[bytes, bytes, bytes]  # (second, backend, server)


def splittable(batch: bytes) -> bool:
    """Whether splitting `batch` on b'\\n' gives the very lines the str slow path would see."""
    if not batch.isascii():
        return False
    return not any(line_break in batch for line_break in _OTHER_LINE_BREAKS)


class BatchTally:
    """Counts of the compact requests of one batch, by raw field values (bytes).

    `requests` counts by (header, second, backend, server, status, termination); `tr` and `ta` by
    (second, backend, server, ms); `bytes_sent` sums bytes by (second, backend, server).
    `slow_lines` are the lines this path did not take, in order.
    """

    __slots__ = ("bytes_sent", "requests", "slow_lines", "ta", "tr")

    def __init__(self) -> None:
        self.requests: defaultdict[RequestKey, int] = defaultdict(int)
        self.tr: defaultdict[TimerKey, int] = defaultdict(int)
        self.ta: defaultdict[TimerKey, int] = defaultdict(int)
        self.bytes_sent: defaultdict[ServerSecond, int] = defaultdict(int)
        self.slow_lines: list[bytes] = []

    @property
    def request_count(self) -> int:
        """How many requests the fast path took."""
        return sum(self.requests.values())

    def clear(self) -> None:
        """Forget every count (the accumulator is reused after each `drain`)."""
        for counts in (self.requests, self.tr, self.ta, self.bytes_sent):
            counts.clear()
        self.slow_lines.clear()


class RawCounts(BatchTally):
    """Batch tallies summed until the next `drain`, holding only keys proven convertible.

    Converting a key to ints and finding its window costs about a microsecond; a batch of 1,000 lines
    can hold nearly as many distinct (second, server, ms) keys. Summing raw keys here (a set
    difference finds the new ones, the only ones to check) and converting once per flush makes that
    cost once per distinct key per second instead of once per key per batch.
    """

    def absorb(self, tally: BatchTally) -> bool:
        """Add a batch's counts; False (and nothing added) if `parse_line` would reject one of its lines."""
        if tally.bytes_sent and min(tally.bytes_sent.values()) < 0:
            return False
        new_requests = tally.requests.keys() - self.requests.keys()
        new_timers = (tally.tr.keys() - self.tr.keys()) | (tally.ta.keys() - self.ta.keys())
        if not all(map(_convertible_request, new_requests)) or not all(map(_convertible_timer, new_timers)):
            return False
        for request_key, count in tally.requests.items():
            self.requests[request_key] += count
        for mine, theirs in ((self.tr, tally.tr), (self.ta, tally.ta)):
            for timer_key, count in theirs.items():
                mine[timer_key] += count
        for server_second, total in tally.bytes_sent.items():
            self.bytes_sent[server_second] += total
        return True


def _convertible_request(key: RequestKey) -> bool:
    """Whether `parse_line` accepts these second, status and termination fields."""
    _header, second, _backend, _server, status, termination = key
    try:
        int(second)
        int(status)
    except ValueError:
        return False
    return len(termination) == 2


def _convertible_timer(key: TimerKey) -> bool:
    try:
        int(key[0])
        int(key[3])
    except ValueError:
        return False
    return True


class HeaderCache:
    """Syslog headers already proven to end exactly where a compact message starts, each with the
    host name it carries ('' when none: see `haproxy_log.syslog_host`)."""

    def __init__(self) -> None:
        self.valid: dict[bytes, str] = {}

    def host(self, header: bytes) -> str:
        """The host name in a header (cached, or read again after the cache was cleared)."""
        host = self.valid.get(header)
        if host is None:
            host = syslog_host(header.decode("ascii", "replace") + ": " + _SYNTHETIC_MESSAGE)
        return host

    def check(self, header: bytes) -> bool:
        """Whether `split_syslog` splits `header + b': fm1 ...'` right before 'fm1' (cached).

        Only RFC 3164 headers at least as long as the widest look-ahead of `split_syslog` qualify,
        so what follows the header cannot change where it splits; anything else takes the slow path.
        """
        if header in self.valid:
            return True
        if not _long_rfc3164_header(header):
            return False
        try:
            _stamp, message = split_syslog(header.decode("ascii") + ": " + _SYNTHETIC_MESSAGE)
        except (ValueError, IndexError):
            return False
        if message != _SYNTHETIC_MESSAGE:
            return False
        if len(self.valid) >= _HEADER_CACHE_LIMIT:
            self.valid.clear()
        self.valid[header] = syslog_host(header.decode("ascii") + ": " + _SYNTHETIC_MESSAGE)
        return True


def _long_rfc3164_header(header: bytes) -> bool:
    """At least 16 bytes after an optional '<PRI>' (split_syslog reads up to 16), and not RFC 5424."""
    rest = header
    if header.startswith(b"<"):
        end = header.find(b">", 1, 6)
        if end < 0:
            return False
        rest = header[end + 1 :]
    return len(rest) >= _RFC3164_LOOKAHEAD and not rest.startswith(b"1 ")


_RFC3164_LOOKAHEAD = 16


def tally_compact(batch: bytes, headers: HeaderCache) -> BatchTally:
    """Count the compact-format requests of a `splittable` batch; other lines go to `slow_lines`."""
    return tally_compact_lines(batch.split(b"\n"), headers)


def tally_compact_lines(lines: Iterable[bytes], headers: HeaderCache) -> BatchTally:
    """`tally_compact` on lines already split (from a `splittable` batch).

    Kept in one loop on purpose: this is the collector's hot path, and a function call per line
    would cost a third of it.
    """
    tally = BatchTally()
    requests, tr_counts, ta_counts, bytes_sent = tally.requests, tally.tr, tally.ta, tally.bytes_sent
    slow = tally.slow_lines.append
    valid_headers = headers.valid
    check_header = headers.check
    for line in lines:
        header, found, message = line.partition(COMPACT_SEPARATOR)
        if found and (header in valid_headers or check_header(header)):
            fields = message.split(b" ")
            if len(fields) == 9:
                accepted, backend, server, status, tr_ms, ta_ms, size, termination, _client = fields
                second = accepted.partition(b".")[0]
                requests[header, second, backend, server, status, termination] += 1
                tr_counts[second, backend, server, tr_ms] += 1
                ta_counts[second, backend, server, ta_ms] += 1
                bytes_sent[second, backend, server] += int(size) if size.isdigit() else _NOT_A_SIZE
                continue
        if line:
            slow(line)
    return tally


HttplogKey = tuple[bytes, bytes, bytes, bytes]  # (backend/server, TR/Tw/Tc/Tr/Ta, status, termination)


class HttplogTally:
    """Counts of `option httplog` requests by raw (target, timers, status, termination), no date.

    For offline summaries, where the second does not matter: a log of a million requests holds only
    thousands of distinct keys, each converted once.
    """

    __slots__ = ("requests", "slow_lines")

    def __init__(self) -> None:
        self.requests: defaultdict[HttplogKey, int] = defaultdict(int)
        self.slow_lines: list[bytes] = []


class DateCache:
    """httplog accept dates ('26/Nov/2026:12:38:53', to the second) that `parse_line` can read."""

    def __init__(self) -> None:
        self.valid: set[bytes] = set()

    def check(self, date: bytes) -> bool:
        if date in self.valid:
            return True
        try:
            _local_date_to_epoch(date.decode("ascii"))
        except (ValueError, KeyError, IndexError, OverflowError):
            return False
        if len(self.valid) >= _HEADER_CACHE_LIMIT:
            self.valid.clear()
        self.valid.add(date)
        return True


def tally_httplog_lines(lines: Iterable[bytes], headers: HeaderCache, dates: DateCache) -> HttplogTally:
    """Count the httplog requests among lines of a `splittable` batch; other lines go to `slow_lines`.

    A line is taken only when `parse_line` would split it into the same fields: a cached syslog
    header, a client without spaces, a readable date without spaces, eleven fields or more with four
    '/' in the connection counts and plain digits as bytes. Status, timers and termination are
    checked per distinct key by `httplog_key_fields`.
    """
    tally = HttplogTally()
    requests = tally.requests
    slow = tally.slow_lines.append
    valid_headers, check_header = headers.valid, headers.check
    valid_dates, check_date = dates.valid, dates.check
    for line in lines:
        head, found, rest = line.partition(b" [")
        if found:
            header, separator, client = head.rpartition(b": ")
            if separator and b" " not in client and (header in valid_headers or check_header(header)):
                date, found, rest = rest.partition(b"] ")
                second = date[:20]
                if found and b" " not in date and (second in valid_dates or check_date(second)):
                    fields = rest.split(b" ", 8)
                    if (
                        len(fields) == 9
                        and fields[4].isdigit()
                        and fields[8].partition(b" ")[0].count(b"/") == 4
                    ):
                        requests[fields[1], fields[2], fields[3], fields[7]] += 1
                        continue
        if line:
            slow(line)
    return tally


def httplog_key_fields(key: HttplogKey) -> tuple[str, str, int, int, int, str] | None:
    """(backend, server, status, Tr, Ta, termination) of a tallied key, or None if `parse_line`
    would reject its lines."""
    target, timers, status, termination = key
    backend, slash, server = target.partition(b"/")
    timer_values = timers.split(b"/")
    if not slash or len(timer_values) != 5 or len(termination) != 4:
        return None
    try:
        return (
            backend.decode("ascii"),
            server.decode("ascii"),
            int(status),
            int(timer_values[3]),
            int(timer_values[4]),
            termination[:2].decode("ascii"),
        )
    except ValueError:
        return None


# Marks a size that is not plain digits: the sum goes negative and `valid_tally` rejects the batch.
_NOT_A_SIZE = -(2**62)
