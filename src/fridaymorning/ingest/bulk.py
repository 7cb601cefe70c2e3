"""Vectorised reading of `option httplog` lines, a whole chunk of a log file at a time, for `summarize`.

`haproxy_log.parse_line` costs microseconds a line; an offline summary of a million lines must stay
within 10x of halog. So `BulkReader.scan` finds the field boundaries of every line of a chunk at
once with numpy (positions of newlines, spaces and ' [', then fixed-width windows over the fields
it needs, read with SWAR arithmetic on 64-bit words) and returns, for each line it takes, the
interned backend/server, status, Tr, Ta and whether the termination state blames the server or the
proxy. No Python code runs per line, only per distinct header, date or backend/server.

It takes a line only when it can prove `parse_line` reads it the same way, and hands every other
line back, as bytes, for the exact parser:

* the line is ASCII without '\\r' (otherwise the text layer's decoding or universal newlines could
  see different lines: such lines come back in `dirty`, to be decoded);
* its message starts after a syslog header that `HeaderCache` proved `split_syslog` ends at the last
  space before the accept date (checked once per distinct header), or there is no header and the
  line cannot look like one; its client is not `fm1` (that would be a compact message);
* the first space followed by '[' opens the accept date, and 10 more spaces follow on the line,
  so `message.split(" ", 11)` gives the fields measured here; the date is `[...]`, and its first
  20 characters are a date `_local_date_to_epoch` reads (checked once per distinct date by
  `DateCache`), so the syslog fallback is never needed;
* backend/server holds a '/', the timers exactly four, the connection counts exactly four; the
  termination state has four characters;
* status, Tr, Ta and bytes are an optional sign and 1 to 16 ASCII digits, which `int` reads
  exactly as parsed here. Anything else (`1_0`, 17 digits...) takes the exact path.

Fields longer than the windows read here (very long names, headers or timers) also take it, and
so does a line whose value hashes like another value's while interning (checked, not assumed).
`tests/unit/ingest/test_summarize_bulk.py` compares the two paths on a corpus of edge cases and on
random and mutated lines.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from fridaymorning.ingest.fastpath import DateCache, HeaderCache

# int64, uint64, bool and uint8 arrays (numpy's stubs type most results of operators as Any).
Ints = npt.NDArray[Any]
Words = npt.NDArray[Any]
Mask = npt.NDArray[Any]
Bytes = npt.NDArray[Any]

PAD = 64  # bytes before and after the lines of a padded chunk (HEAD and TAIL below)
_HEADER_WIDTHS = (40, 64)  # syslog headers ('<134>Nov 26 12:38:53 host haproxy[6027]'), longest 64
_TARGET_WIDTHS = (16, 32, 48)  # backend/server, longest 48
_SLASHED_WIDTHS = (16, 32)  # timers (TR/Tw/Tc/Tr/Ta) and connection counts (ac/fc/bc/sc/rc)
_INT_WIDTHS = (8, 16)  # numbers are read right-aligned, at most 16 digits after a sign
_DATE_CHARS = 20  # parse_line reads characters 1 to 20 of '[dd/Mmm/yyyy:hh:mm:ss.mmm]'
_DATE_WIDTH = 24
_PEELS = 16  # distinct values found by elimination before sorting the rest
_RUN_RATIO = 16  # intern runs of equal rows when they are at least this long on average

_SPACE, _NEWLINE, _SLASH, _COLON = ord(" "), ord("\n"), ord("/"), ord(":")
_OPEN, _CLOSE, _MINUS, _PLUS, _LT = ord("["), ord("]"), ord("-"), ord("+"), ord("<")
_ZERO = ord("0")

_BLAMED = np.zeros(256, dtype=np.bool_)
_BLAMED[list(b"SsPRID")] = True  # haproxy_log._BLAMED_TERMINATION
_WIDTHS = (8, 16, 24, 32, 40, 48, 64)
# Row n of _LEFT[width] keeps the first n bytes of a window of that width; row n of _RIGHT the last n.
_LEFT = {width: np.tril(np.full((width + 1, width), 0xFF, dtype=np.uint8), -1) for width in _WIDTHS}
_RIGHT = {width: _LEFT[width][:, ::-1].copy() for width in _WIDTHS}
# (Rows of these tables are looked up with np.take, many times faster than fancy indexing.)


def _u64(value: int) -> np.uint64:
    return np.uint64(value)


_ONES, _LOW7, _HIGH = _u64(0x0101010101010101), _u64(0x7F7F7F7F7F7F7F7F), _u64(0x8080808080808080)
_PAST_NINE = _u64(0x7676767676767676)  # + a byte of 0..0x7F sets its high bit iff the byte is > 9
_HASH_MULTIPLIERS = [
    _u64(multiplier)
    for multiplier in (
        0xBF58476D1CE4E5B9,
        0x94D049BB133111EB,
        0xD6E8FEB86659FD93,
        0xA0761D6478BD642F,
        0xE7037ED1A0B428DB,
        0x8EBC6AF09C88C6E3,
        0x589965CC75374CC3,
        0x1D8E4E27C47D124F,
    )
]


class HttplogColumns:
    """The requests read from a chunk, one entry per line, and the lines not read.

    `targets` are the distinct raw 'backend/server' fields; `target` indexes them. `rest` holds the
    other non-empty lines (ASCII, no '\\r'); `dirty` the lines to decode before parsing them.
    """

    __slots__ = ("blamed", "dirty", "rest", "status", "ta", "target", "targets", "tr")

    def __init__(self) -> None:
        empty = np.zeros(0, dtype=np.int64)
        self.targets: list[bytes] = []
        self.target: Ints = empty
        self.status: Ints = empty
        self.tr: Ints = empty
        self.ta: Ints = empty
        self.blamed: Mask = np.zeros(0, dtype=np.bool_)
        self.rest: list[bytes] = []
        self.dirty: list[bytes] = []


def scan_httplog(chunk: bytes, headers: HeaderCache, dates: DateCache) -> HttplogColumns:
    """Read the httplog requests of `chunk` (whole lines; the last may lack its '\\n')."""
    if chunk and not chunk.endswith(b"\n"):
        chunk += b"\n"
    return BulkReader(headers, dates).scan(HEAD + chunk + TAIL)


# A padded chunk is HEAD + lines each ending in '\n' + TAIL. Windows read up to PAD bytes on either
# side of a field, so they stay inside the buffer; the space that starts HEAD and the ' [' pairs
# that end TAIL are sentinels: a space before every line, and an accept date followed by enough
# spaces after every line, so that the positions read for each line always exist.
HEAD = b" " + bytes(PAD - 1)
TAIL = bytes(PAD - 24) + b" [" * 12


class BulkReader:
    """Reads padded chunks one after the other, reusing its scratch memory (one per thread)."""

    def __init__(self, headers: HeaderCache, dates: DateCache) -> None:
        self.headers = headers
        self.dates = dates
        self._scratch = np.zeros(0, dtype=np.bool_)

    def scan(self, padded: bytes | bytearray) -> HttplogColumns:
        """The httplog requests of a padded chunk (see HEAD and TAIL), and the lines not read."""
        result = HttplogColumns()
        data = np.frombuffer(padded, dtype=np.uint8)
        ends = np.flatnonzero(self._equal(data, _NEWLINE))
        if len(ends) == 0:
            return result
        starts = np.empty_like(ends)
        starts[0] = PAD
        starts[1:] = ends[:-1] + 1
        taken = ends > starts  # empty lines are neither taken nor returned
        dirty = np.zeros(len(ends), dtype=np.bool_)
        if not padded.isascii() or b"\r" in padded:
            bad = np.flatnonzero((data >= 0x80) | (data == ord("\r")))
            dirty[np.searchsorted(ends, bad)] = True
            taken &= ~dirty

        lines = np.flatnonzero(taken)
        if len(lines) == len(ends):
            taken = self._read_lines(data, starts, ends, result)
        else:
            good = self._read_lines(data, starts[lines], ends[lines], result)
            taken[lines[~good]] = False

        if len(result.target) < len(ends):
            result.rest = _slices(padded, starts, ends, ~taken & ~dirty & (ends > starts))
            result.dirty = _slices(padded, starts, ends, dirty)
        return result

    def _equal(self, data: Bytes, byte: int) -> Mask:
        """data == byte, in scratch memory (valid until the next call)."""
        if len(self._scratch) < len(data):
            self._scratch = np.zeros(len(data), dtype=np.bool_)
        return np.equal(data, byte, out=self._scratch[: len(data)])

    def _read_lines(self, data: Bytes, starts: Ints, ends: Ints, result: HttplogColumns) -> Mask:
        """Fill `result` with the lines (given by start and end) read here; the mask of those lines."""
        if len(starts) == 0:
            return np.zeros(0, dtype=np.bool_)
        spaces = np.flatnonzero(self._equal(data, _SPACE))
        brackets = np.flatnonzero(self._equal(data, _OPEN))
        opening = brackets[data[brackets - 1] == _SPACE] - 1  # the spaces followed by '['
        # The first ' [' from each line start (TAIL has one after the last line), and its index in `spaces`.
        k = np.searchsorted(spaces, opening[np.searchsorted(opening, starts)])
        # Row j: the space before the client (if any), then the spaces ending the client, date,
        # frontend, target, timers, status, bytes, cookies (2), termination state and connection counts.
        spaced = np.ascontiguousarray(sliding_window_view(spaces, 12)[k - 1].T)
        ok: Mask = spaced[10] < ends  # 11 fields at least: the connection counts start before the end

        # Where the message starts: after 'HEADER: ' (the space before the client), or at the line start.
        before = spaced[0]
        headed = before >= starts
        ok &= ~headed | (data[before - 1] == _COLON)
        client = np.where(headed, before + 1, starts)
        client_length = spaced[1] - client
        fm1 = (client_length == 3) & (data[client] == ord("f")) & (data[client + 1] == ord("m"))
        ok &= ~(fm1 & (data[client + 2] == ord("1")))  # 'fm1 ...' is a compact message
        bare = np.flatnonzero(~headed)
        if len(bare):
            # A bare message must not look like a header to split_syslog: no '<', 'Mmm dd ' or ISO date.
            line = starts[bare]
            plain = (data[line] != _LT) & (client_length[bare] >= 4)
            digits = (data[line] - _ZERO < 10) & (data[line + 1] - _ZERO < 10)
            plain &= ~(digits & (data[line + 2] - _ZERO < 10) & (data[line + 3] - _ZERO < 10))
            ok[bare] &= plain
        # The accept date '[...]', read by parse_line from its 2nd to its 21st character.
        ok &= (spaced[2] - spaced[1] > _DATE_CHARS + 1) & (data[spaced[2] - 1] == _CLOSE)
        ok &= spaced[10] - spaced[9] == 5  # termination state: 4 characters

        lines = np.flatnonzero(ok)
        if len(lines) == 0:
            return ok
        if len(lines) < len(ok):
            spaced, starts, ends, before, headed = (
                spaced[:, lines],
                starts[lines],
                ends[lines],
                before[lines],
                headed[lines],
            )
        counts_end = np.minimum(spaced[11], ends)
        good = _read_fields(
            data, spaced, starts, counts_end, before, headed, self.headers, self.dates, result
        )
        ok[lines] = good
        return ok


def _slices(padded: bytes | bytearray, starts: Ints, ends: Ints, chosen: Mask) -> list[bytes]:
    lines = np.flatnonzero(chosen)
    return [
        bytes(padded[start:end])
        for start, end in zip(starts[lines].tolist(), ends[lines].tolist(), strict=True)
    ]


def _read_fields(
    data: Bytes,
    spaced: Ints,
    starts: Ints,
    counts_end: Ints,
    before: Ints,
    headed: Mask,
    headers: HeaderCache,
    dates: DateCache,
    result: HttplogColumns,
) -> Mask:
    """The fields of lines whose spaces are known: which lines are good, with their values in `result`."""
    count = len(starts)
    # Timers: exactly four '/'; Tr between the 3rd and the 4th, Ta after the 4th.
    timers_start = spaced[4] + 1
    timers_length = spaced[5] - timers_start
    slashes = _window(data, timers_start, timers_length, _SLASHED_WIDTHS) == _SLASH
    good: Mask = (timers_length <= slashes.shape[1]) & (_count_true(slashes) == 4)
    third, fourth = (timers_start + column for column in _nth_positions(slashes, (3, 4)))
    tr, valid = _read_ints(data, third + 1, fourth)
    good &= valid
    ta, valid = _read_ints(data, fourth + 1, spaced[5])
    good &= valid
    status, valid = _read_ints(data, spaced[5] + 1, spaced[6])
    good &= valid
    good &= _read_ints(data, spaced[6] + 1, spaced[7], values=False)[1]  # bytes: an int, not used

    # Connection counts: exactly four '/'.
    counts_start = spaced[10] + 1
    counts_length = counts_end - counts_start
    slashes = _window(data, counts_start, counts_length, _SLASHED_WIDTHS) == _SLASH
    good &= (counts_length <= slashes.shape[1]) & (_count_true(slashes) == 4)

    # Distinct dates and headers are checked once each, as parse_line would read them.
    date_length = np.full(count, _DATE_CHARS)
    date_window = _window(data, spaced[1] + 2, date_length, (_DATE_WIDTH,))
    good &= _check_distinct(date_window, date_length, good, dates.check)
    header_length = before - 1 - starts
    if headed.any():
        among = good & headed
        header_window = _window(data, starts, np.where(among, header_length, 0), _HEADER_WIDTHS)
        among &= header_length <= header_window.shape[1]
        good &= ~headed | _check_distinct(header_window, header_length, among, headers.check)

    # Target 'backend/server' with a '/', interned among the good lines.
    chosen = np.flatnonzero(good)
    target_start = spaced[3][chosen] + 1
    target_length = spaced[4][chosen] - target_start
    target_window = _window(data, target_start, target_length, _TARGET_WIDTHS)
    fits = (target_length <= target_window.shape[1]) & _any_true(target_window == _SLASH)
    target, distinct, exact = _intern(target_window, target_length, fits)
    good[chosen[~exact]] = False
    chosen = chosen[exact]
    result.targets = distinct
    result.target = target[exact]
    result.status = status[chosen]
    result.tr = tr[chosen]
    result.ta = ta[chosen]
    result.blamed = np.take(_BLAMED, data[spaced[9][chosen] + 1])
    return good


def _fit(lengths: Ints, widths: tuple[int, ...]) -> int:
    """The narrowest width holding every length that fits the widest (longer ones are rejected)."""
    if len(lengths) == 0:
        return widths[0]
    longest = int(lengths.max())
    if longest > widths[-1]:
        fitting = lengths[lengths <= widths[-1]]
        longest = int(fitting.max()) if len(fitting) else 0
    return next(width for width in widths if width >= longest)


def _window(data: Bytes, starts: Ints, lengths: Ints, widths: tuple[int, ...]) -> Bytes:
    """The bytes from each start in a window of the narrowest of `widths` that fits the lengths;
    bytes past each length are zeroed. A field longer than the window is cut: check its length."""
    width = _fit(lengths, widths)
    rows: Bytes = sliding_window_view(data, width)[starts]
    rows &= np.take(_LEFT[width], np.clip(lengths, 0, width), axis=0)
    return rows


def _words(rows: Bytes) -> Words:
    """The rows of a byte (or bool) matrix, its width a multiple of 8, as 64-bit words."""
    return np.ascontiguousarray(rows).view(np.uint8).view(np.uint64)


def _count_true(flags: Mask) -> Ints:
    """How many flags are set in each row (fewer than 256)."""
    words = (_words(flags) * _ONES) >> _u64(56)
    total = words[:, 0].astype(np.int64)
    for column in range(1, words.shape[1]):
        total += words[:, column].astype(np.int64)
    return total


def _any_true(flags: Mask) -> Mask:
    words = _words(flags)
    seen = words[:, 0].copy()
    for column in range(1, words.shape[1]):
        seen |= words[:, column]
    nonzero: Mask = seen != 0
    return nonzero


def _nth_positions(flags: Mask, ranks: tuple[int, ...]) -> list[Ints]:
    """Column of the rank-th set flag (from 1) of each row, for each rank (the width if absent)."""
    words = _words(flags) * _ONES  # each byte: how many flags up to it within its word
    carry = np.zeros(len(words), dtype=np.uint64)
    for column in range(words.shape[1]):
        total = words[:, column] >> _u64(56)
        words[:, column] += carry * _ONES
        carry += total
    prefix = words.view(np.uint8)
    return [_count_true(prefix < rank) for rank in ranks]


def _read_ints(data: Bytes, starts: Ints, ends: Ints, values: bool = True) -> tuple[Ints, Mask]:
    """Values of the fields [start, end) that are an optional '+'/'-' and 1 to 16 ASCII digits, and
    which fields are (without `values`, only which fields are)."""
    magnitude, valid = _read_digits(data, starts, ends, values)
    retry = np.flatnonzero(~valid)  # signed numbers, such as the -1 of a timer, are read again
    if len(retry):
        first = data[starts[retry]]
        retry = retry[(first == _MINUS) | (first == _PLUS)]
        if len(retry):
            unsigned, valid[retry] = _read_digits(data, starts[retry] + 1, ends[retry], values)
            if values:
                magnitude[retry] = np.where(data[starts[retry]] == _MINUS, -unsigned, unsigned)
    return magnitude, valid


def _read_digits(data: Bytes, starts: Ints, ends: Ints, values: bool) -> tuple[Ints, Mask]:
    """Values of the fields [start, end) of 1 to 16 ASCII digits, and which fields are such."""
    length = ends - starts
    width = _fit(length, _INT_WIDTHS)
    valid = (length - 1).view(np.uint64) < width  # 1 <= length <= width
    rows = sliding_window_view(data, width)[ends - width]
    digits = _words((rows - np.uint8(_ZERO)) & np.take(_RIGHT[width], np.clip(length, 0, width), axis=0))
    # Every byte a digit (0..9): no high bit, and none set by adding 0x76 to the low 7 bits.
    wrong = (((digits & _LOW7) + _PAST_NINE) | digits) & _HIGH
    valid &= (wrong[:, 0] | wrong[:, -1]) == 0
    if not values:
        return starts, valid
    # Each word holds 8 digits, the most significant in its lowest byte: combine them pairwise (SWAR).
    digits = (digits * _u64(10) + (digits >> _u64(8))) & _u64(0x00FF00FF00FF00FF)
    digits = (digits * _u64(100) + (digits >> _u64(16))) & _u64(0x0000FFFF0000FFFF)
    digits = (digits * _u64(10000) + (digits >> _u64(32))) & _u64(0xFFFFFFFF)
    magnitude = digits[:, 0].astype(np.int64)
    if digits.shape[1] == 2:
        magnitude = magnitude * 100_000_000 + digits[:, 1].astype(np.int64)
    return magnitude, valid


def _check_distinct(windows: Bytes, lengths: Ints, among: Mask, check: Any) -> Mask:
    """Whether `check(bytes)` holds for each row's value (rows outside `among` are False)."""
    ids, distinct, exact = _intern(windows, lengths, among)
    passed = np.array([bool(check(value)) for value in distinct] + [False], dtype=np.bool_)
    return np.take(passed, np.where(exact, ids, len(distinct)))


def _intern(windows: Bytes, lengths: Ints, among: Mask) -> tuple[Ints, list[bytes], Mask]:
    """(id of each row's value, the distinct values, whether the row is among those interned).

    Rows among those interned must have a length within the window. Logs repeat values line after
    line (headers, dates): when rows form few runs of equal rows, each run is interned once.
    Otherwise rows are grouped by a hash of their value, the few common hashes by elimination and
    the rest by sorting, then compared with their group's first row: a row whose hash collides with
    another value's is left out (its line takes the exact path).
    """
    count = len(windows)
    ids = np.zeros(count, dtype=np.int64)
    remaining = np.flatnonzero(among)
    if len(remaining) == 0:
        return ids, [], np.zeros(count, dtype=np.bool_)
    words = _words(windows)
    change = lengths[1:] != lengths[:-1]
    for column in range(words.shape[1]):
        change |= words[1:, column] != words[:-1, column]
    heads = np.flatnonzero(change) + 1
    if len(heads) * _RUN_RATIO < count:
        heads = np.concatenate(([0], heads))
        table: dict[bytes, int] = {}
        head_ids = [
            table.setdefault(windows[row, : max(length, 0)].tobytes(), len(table))
            for row, length in zip(heads.tolist(), lengths[heads].tolist(), strict=True)
        ]
        ids = np.repeat(np.array(head_ids, dtype=np.int64), np.diff(heads, append=count))
        return ids, list(table), among.copy()

    multipliers = _HASH_MULTIPLIERS[: words.shape[1]]
    hashes = lengths.astype(np.uint64) * _u64(0x9E3779B97F4A7C15)
    for column, multiplier in enumerate(multipliers):
        hashes += words[:, column] * multiplier
    hashes ^= hashes >> _u64(29)
    firsts: list[int] = []
    left = hashes[remaining]
    while len(remaining) and len(firsts) < _PEELS:
        same = left == left[0]
        ids[remaining[same]] = len(firsts)
        firsts.append(int(remaining[0]))
        peeled = len(remaining)
        remaining, left = remaining[~same], left[~same]
        if (peeled - len(remaining)) * 64 < peeled:
            break  # values this rare are many: sort them
    if len(remaining):
        _, first, inverse = np.unique(left, return_index=True, return_inverse=True)
        ids[remaining] = len(firsts) + inverse
        firsts.extend(remaining[first].tolist())
    representative = np.take(np.array(firsts, dtype=np.int64), ids)
    exact = among & (lengths == lengths[representative])
    other = words[representative]
    for column in range(words.shape[1]):
        exact &= words[:, column] == other[:, column]
    distinct = [windows[row, : lengths[row]].tobytes() for row in firsts]
    return ids, distinct, exact
