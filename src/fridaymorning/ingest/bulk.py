"""Vectorised reading of `option httplog` lines, a whole chunk of a log file at a time, for `summarize`.

`haproxy_log.parse_line` costs microseconds a line; an offline summary of a million lines must stay
within 10x of halog. So `scan_httplog` finds the field boundaries of every line of a chunk at once
with numpy (positions of newlines and spaces, then fixed-width windows over the fields it needs) and
returns, for each line it takes, the interned backend/server, status, Tr, Ta and whether the
termination state blames the server or the proxy.

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

Fields longer than the windows read here (very long names, headers or timers) also take it.
`tests/unit/ingest/test_summarize_bulk.py` compares the two paths on a corpus of edge cases and on
random and mutated lines.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from fridaymorning.ingest.fastpath import DateCache, HeaderCache

Ints = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
Bytes2D = npt.NDArray[np.uint8]

_PAD = 64  # zero bytes around a chunk, so that every window read stays inside the buffer
_HEADER_WIDTH = 64  # longest syslog header interned here ('<134>Nov 26 12:38:53 host haproxy[6027]')
_TARGET_WIDTH = 48  # longest backend/server
_DATE_WIDTH = 24  # the 20 characters of the date read by parse_line, in a window of 3 words
_DATE_CHARS = 20
_SLASHED_WIDTH = 32  # longest timers (TR/Tw/Tc/Tr/Ta) and connection counts (ac/fc/bc/sc/rc)
_INT_WIDTH = 16  # numbers are read right-aligned in 16 bytes, so at most 16 digits after a sign
_MAX_DIGITS = 16
_PEELS = 16  # distinct values found by elimination before hashing the rest

_SPACE, _NEWLINE, _SLASH, _COLON = ord(" "), ord("\n"), ord("/"), ord(":")
_OPEN, _CLOSE, _MINUS, _PLUS, _LT = ord("["), ord("]"), ord("-"), ord("+"), ord("<")
_ZERO = ord("0")

_BLAMED = np.zeros(256, dtype=np.bool_)
_BLAMED[list(b"SsPRID")] = True  # haproxy_log._BLAMED_TERMINATION
_ONES = np.uint64(0x0101010101010101)
# Row n of _LEFT_MASKS[width] keeps the first n bytes of a window; row n of _RIGHT_MASKS the last n.
_LEFT_MASKS = {
    width: np.tril(np.full((width + 1, width), 0xFF, dtype=np.uint8), -1) for width in (16, 24, 32, 48, 64)
}
_RIGHT_MASKS = _LEFT_MASKS[_INT_WIDTH][:, ::-1].copy()


class HttplogColumns:
    """The requests `scan_httplog` took from a chunk, one entry per line, and the lines it did not take.

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
    result = HttplogColumns()
    if not chunk:
        return result
    if not chunk.endswith(b"\n"):
        chunk += b"\n"
    padded = bytes(_PAD) + chunk + bytes(_PAD)
    data = np.frombuffer(padded, dtype=np.uint8)
    ends = np.flatnonzero(data == _NEWLINE)
    starts = np.empty_like(ends)
    starts[0] = _PAD
    starts[1:] = ends[:-1] + 1
    taken = ends > starts  # empty lines are neither taken nor returned

    dirty = np.zeros(len(ends), dtype=np.bool_)
    if not chunk.isascii() or b"\r" in chunk:
        bad = np.flatnonzero((data >= 0x80) | (data == ord("\r")))
        dirty[np.searchsorted(ends, bad)] = True
        taken &= ~dirty

    lines = np.flatnonzero(taken)
    good = _read_lines(data, starts[lines], ends[lines], headers, dates, result)
    taken[lines[~good]] = False

    rest = np.flatnonzero(~taken & ~dirty & (ends > starts))
    result.rest = [padded[start:end] for start, end in zip(starts[rest].tolist(), ends[rest].tolist())]
    dirty_lines = np.flatnonzero(dirty)
    result.dirty = [
        padded[start:end] for start, end in zip(starts[dirty_lines].tolist(), ends[dirty_lines].tolist())
    ]
    return result


def _read_lines(
    data: Bytes2D, starts: Ints, ends: Ints, headers: HeaderCache, dates: DateCache, result: HttplogColumns
) -> Mask:
    """Fill `result` with the lines (given by start and end) read here; the mask of those lines."""
    count = len(starts)
    if count == 0:
        return np.zeros(0, dtype=np.bool_)
    big = len(data)
    spaces = np.flatnonzero(data == _SPACE)
    # Spaces with sentinels: one before (index 0) and eleven after, beyond any line end.
    space_at = np.concatenate(([-big], spaces, np.full(11, big)))
    opening = np.flatnonzero(data[spaces + 1] == _OPEN)  # spaces followed by '[', as indices of `spaces`
    opening_at = np.append(spaces[opening], big)
    first = np.searchsorted(opening_at, starts)  # first ' [' at or after each line start
    k = np.append(opening, len(spaces))[first] + 1  # its index in space_at
    field_ends = [space_at[k + offset] for offset in range(11)]  # the space after date (1) ... conns (10)
    date_start = field_ends[0]  # the space before '['
    ok = field_ends[9] < ends  # 11 fields at least: the connection counts start before the line end
    field_ends[10] = np.minimum(field_ends[10], ends)

    # Where the message starts: after 'HEADER: ' (the space before the client), or at the line start.
    before = space_at[k - 1]
    headed = before >= starts
    client = np.where(headed, before + 1, starts)
    client_length = date_start - client
    is_fm1 = (client_length == 3) & (data[client] == ord("f")) & (data[client + 1] == ord("m"))
    ok &= ~(is_fm1 & (data[client + 2] == ord("1")))
    header_length = np.where(headed, before - 1 - starts, 0)
    ok &= ~headed | ((data[before - 1] == _COLON) & (header_length <= _HEADER_WIDTH))
    # A bare message must not look like a syslog header to split_syslog: no '<', no 'Mmm dd ', no ISO date.
    first_four_digits = np.ones(count, dtype=np.bool_)
    for offset in range(4):
        first_four_digits &= (data[starts + offset] - _ZERO) < 10
    ok &= headed | ((data[starts] != _LT) & (client_length >= 4) & ~first_four_digits)

    # The accept date '[dd/Mmm/yyyy:hh:mm:ss...]': parse_line reads its characters 1 to 20.
    date_end = field_ends[1]
    ok &= (date_end - date_start - 1 > _DATE_CHARS) & (data[date_end - 1] == _CLOSE)

    # Termination state: 4 characters.
    ok &= field_ends[9] - field_ends[8] == 5

    lines = np.flatnonzero(ok)
    if len(lines) == 0:
        return ok
    ends_of = [field[lines] for field in field_ends]
    date_start, starts = date_start[lines], starts[lines]
    header_length, headed = header_length[lines], headed[lines]
    good = np.ones(len(lines), dtype=np.bool_)

    # Target 'backend/server', at most _TARGET_WIDTH bytes, with a '/'.
    target_start = ends_of[2] + 1
    target_length = ends_of[3] - target_start
    good &= (target_length <= _TARGET_WIDTH) & (target_length > 0)
    target_window = _window(data, target_start, target_length, _TARGET_WIDTH)
    good &= _any_true(target_window == _SLASH)

    # Timers: exactly four '/'; Tr between the 3rd and 4th, Ta after the 4th.
    timers_start = ends_of[3] + 1
    timers_length = ends_of[4] - timers_start
    good &= timers_length <= _SLASHED_WIDTH
    slashes = _window(data, timers_start, timers_length, _SLASHED_WIDTH) == _SLASH
    good &= _count_true(slashes) == 4
    third, fourth = (timers_start + column for column in _nth_positions(slashes, (3, 4)))
    tr, valid = _read_ints(data, third + 1, fourth)
    good &= valid
    ta, valid = _read_ints(data, fourth + 1, ends_of[4])
    good &= valid
    status, valid = _read_ints(data, ends_of[4] + 1, ends_of[5])
    good &= valid
    good &= _read_ints(data, ends_of[5] + 1, ends_of[6])[1]  # bytes: must be an int, value unused

    # Connection counts: exactly four '/'.
    counts_start = ends_of[9] + 1
    counts_length = ends_of[10] - counts_start
    good &= counts_length <= _SLASHED_WIDTH
    good &= _count_true(_window(data, counts_start, counts_length, _SLASHED_WIDTH) == _SLASH) == 4

    # Distinct dates and headers are checked once each, like parse_line would read them.
    date_length = np.full(len(lines), _DATE_CHARS)
    date_window = _window(data, date_start + 2, date_length, _DATE_WIDTH)
    good &= _check_distinct(date_window, date_length, good, dates.check)
    header_window = _window(data, starts, header_length, _HEADER_WIDTH)
    good &= ~headed | _check_distinct(header_window, header_length, good & headed, headers.check)

    # Intern targets among the lines still good.
    chosen = np.flatnonzero(good)
    target_ids, distinct, exact = _intern(target_window[chosen], target_length[chosen])
    good[chosen[~exact]] = False
    keep = exact
    result.targets = distinct
    result.target = target_ids[keep]
    chosen = chosen[keep]
    result.status = status[chosen]
    result.tr = tr[chosen]
    result.ta = ta[chosen]
    result.blamed = _BLAMED[data[ends_of[8][chosen] + 1]]
    ok[lines] = good
    return ok


def _window(data: Bytes2D, starts: Ints, lengths: Ints, width: int) -> Bytes2D:
    """The `width` bytes from each start, with the bytes past each length (clipped to width) zeroed."""
    rows: Bytes2D = sliding_window_view(data, width)[starts]
    rows &= _LEFT_MASKS[width][np.clip(lengths, 0, width)]
    return rows


def _row_words(rows: Bytes2D) -> npt.NDArray[np.uint64]:
    """The rows of a byte matrix (width a multiple of 8) as 64-bit words."""
    return np.ascontiguousarray(rows).view(np.uint8).view(np.uint64)


def _count_true(flags: Mask) -> Ints:
    """How many flags are set in each row (width a multiple of 8, fewer than 256 set)."""
    words = (_row_words(flags) * _ONES) >> np.uint64(56)
    total = words[:, 0].astype(np.int64)
    for column in range(1, words.shape[1]):
        total += words[:, column].astype(np.int64)
    return total


def _any_true(flags: Mask) -> Mask:
    words = _row_words(flags)
    seen = words[:, 0].copy()
    for column in range(1, words.shape[1]):
        seen |= words[:, column]
    return seen != 0


def _nth_positions(flags: Mask, ranks: tuple[int, ...]) -> list[Ints]:
    """Column of the rank-th set flag (1-based) of each row, for each rank (the width if absent)."""
    words = _row_words(flags) * _ONES  # each byte: how many flags up to it within its word
    carry = np.zeros(len(words), dtype=np.uint64)
    for column in range(words.shape[1]):
        total = words[:, column] >> np.uint64(56)
        words[:, column] += carry * _ONES
        carry += total
    prefix = words.view(np.uint8)
    return [_count_true(prefix < rank) for rank in ranks]


def _read_ints(data: Bytes2D, starts: Ints, ends: Ints) -> tuple[Ints, Mask]:
    """Values of the fields [start, end) that are an optional '+'/'-' and 1 to 15 ASCII digits."""
    first = data[starts]
    negative = first == _MINUS
    digits_start = starts + (negative | (first == _PLUS))
    length = ends - digits_start
    valid = (length >= 1) & (length <= _MAX_DIGITS)
    rows = sliding_window_view(data, _INT_WIDTH)[np.maximum(ends - _INT_WIDTH, 0)]
    digits = (rows - np.uint8(_ZERO)) & _RIGHT_MASKS[np.clip(length, 0, _INT_WIDTH)]
    valid &= ~_any_true(digits > 9)
    # Each word holds 8 digits, the most significant first (lowest address, lowest byte): combine
    # them pairwise (SWAR), then the two words.
    words = digits.view(np.uint64)
    words = (words * np.uint64(10) + (words >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    words = (words * np.uint64(100) + (words >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    words = (words * np.uint64(10000) + (words >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
    magnitude = (words[:, 0] * np.uint64(100_000_000) + words[:, 1]).astype(np.int64)
    return np.where(negative, -magnitude, magnitude), valid


def _check_distinct(windows: Bytes2D, lengths: Ints, among: Mask, check: Any) -> Mask:
    """Whether `check(bytes)` holds for each row's value (rows outside `among` are False)."""
    answer = np.zeros(len(windows), dtype=np.bool_)
    chosen = np.flatnonzero(among)
    if len(chosen) < len(windows):
        windows, lengths = windows[chosen], lengths[chosen]
    ids, distinct, exact = _intern(windows, lengths)
    passed = np.array([bool(check(value)) for value in distinct] + [False], dtype=np.bool_)
    answer[chosen] = passed[np.where(exact, ids, len(distinct))]
    return answer


def _intern(windows: Bytes2D, lengths: Ints) -> tuple[Ints, list[bytes], Mask]:
    """(id of each row's value, the distinct values, whether the row was interned exactly).

    The few common values are found by elimination; the rest, if any, by hashing, checked against
    a representative (a row whose hash collides with another value's is not `exact`).
    """
    count = len(windows)
    ids = np.zeros(count, dtype=np.int64)
    exact = np.ones(count, dtype=np.bool_)
    distinct: list[bytes] = []
    if count == 0:
        return ids, distinct, exact
    words = _row_words(windows)
    columns = words.shape[1]
    remaining = np.arange(count)
    left_words, left_lengths = words, lengths
    while len(remaining) and len(distinct) < _PEELS:
        row = remaining[0]
        differ = left_lengths != lengths[row]
        for column in range(columns):
            differ |= left_words[:, column] != words[row, column]
        ids[remaining[~differ]] = len(distinct)
        distinct.append(windows[row, : lengths[row]].tobytes())
        peeled = len(remaining)
        remaining = remaining[differ]
        left_words, left_lengths = left_words[differ], left_lengths[differ]
        if (peeled - len(remaining)) * 64 < peeled:
            break  # values this rare are many: hash them
    if len(remaining):
        hashes = left_lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        for column in range(columns):
            hashes = (hashes ^ left_words[:, column]) * np.uint64(0xBF58476D1CE4E5B9)
            hashes ^= hashes >> np.uint64(31)
        _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        representative = first[inverse]
        exact[remaining] = (left_words == left_words[representative]).all(axis=1) & (
            left_lengths == left_lengths[representative]
        )
        ids[remaining] = len(distinct) + inverse
        distinct.extend(windows[remaining[row], : lengths[remaining[row]]].tobytes() for row in first.tolist())
    return ids, distinct, exact
