"""Pure parsers for HAProxy request logs: syslog headers, `option httplog`, and our compact format.

Nothing here does I/O, and nothing on the public API raises on a malformed line: `parse_line` returns
None and the caller counts the line as rejected (or as an event, see `parse_event`).

A parsed request is a plain tuple, `Request`, because the collector parses hundreds of thousands of
lines per second and a tuple is the cheapest record Python has::

    (second, backend, server, status, tr_ms, ta_ms, bytes, termination)
     int     str      str     int     int    int    int    str (2 chars)

`second` is the request's accept time (epoch seconds). Timers and status keep HAProxy's -1 for "never
happened" (for example Tr when the server was never reached); the `+` of `option logasap` is dropped.

Syslog headers understood (each optional, so plain log files and bare messages parse too)::

    <134>Nov 26 12:18:15 haproxy[6027]: MSG                              RFC 3164, HAProxy's default
    <134>Nov 26 12:18:15 myhost haproxy[6027]: MSG                       RFC 3164 + log-send-hostname
    Nov 26 12:18:15 myhost haproxy[6027]: MSG                            a line of /var/log/haproxy.log
    <134>1 2026-11-26T12:18:15.123456+00:00 myhost haproxy 6027 - - MSG  RFC 5424 (`format rfc5424`)

The host name (`syslog_host`) tells a fleet's instances apart: the collector counts logged requests
per (host, backend, server).

Request messages understood:

* Our compact format, `COMPACT_LOG_FORMAT`, checked against HAProxy 2.6.12::

      fm1 %Ts.%ms %b %s %ST %Tr %Ta %B %ts %ci
      fm1 1795696730.450 be v2-1 503 -1 3005 217 SC 127.0.0.1

  `fm1` tags the format and its version. `%Ts.%ms` is the accept date as epoch seconds and
  milliseconds (zero-padded to 3 digits), `%b`/`%s` the backend and server (`<NOSRV>` when none was
  chosen), `%ST` the status, `%Tr` the server's response time and `%Ta` the total active time in ms,
  `%B` the bytes sent to the client, `%ts` the 2-character termination state, `%ci` the client IP.
  Names in HAProxy cannot contain spaces, so the line is split on single spaces into exactly 10 fields.

* HAProxy's standard `option httplog` (and `option httpslog`, whose extra fields come after the
  request line), as the manual defines it::

      %ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq \
          %hr %hs %{+Q}r
      127.0.0.1:41062 [26/Nov/2026:12:38:53.474] hl be/v2-1 0/0/-1/-1/3003 503 217 - - SC-- 2/1/0/0/3 0/0 \
          {Mozilla 5 x} "GET /x?a=b HTTP/1.1"

  Only the first eleven fields are read, so captured headers (`{...}`, which may hold spaces) and the
  request line (possibly `"<BADREQ>"`) never confuse the parser. The date has no time zone: HAProxy
  writes local time, and it is read in the collector's local time zone (run both in the same zone,
  or prefer the compact format, which carries epoch seconds). `option httplog clf` is not supported.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

# The format this module parses: fridaymorning.logformat, which the router renders into haproxy.cfg.
from fridaymorning.logformat import COMPACT_LOG_FORMAT as COMPACT_LOG_FORMAT
from fridaymorning.logformat import COMPACT_TAG as COMPACT_TAG

_COMPACT_PREFIX = COMPACT_TAG + " "

# The server HAProxy logs when a request never reached one (denied, bad request, no server up).
NO_SERVER = "<NOSRV>"

Request = tuple[int, str, str, int, int, int, int, str]

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1
    )
}

# First character of the termination state when the server or HAProxy itself ended the request:
# S server aborted/refused, s server timeout, P proxy aborted (limit, deny, bad server response),
# R proxy resource exhausted, I proxy internal error, D server went down and its sessions were killed.
# Not blamed: - normal, C/c client abort/timeout, L served locally, K killed by an admin,
# U backup session killed because an active server came back.
_BLAMED_TERMINATION = frozenset("SsPRID")

# HAProxy's own notices that share the log with requests (server state changes, proxy start/stop...).
_EVENT_PATTERN = re.compile(
    r"(?:Proxy |Stopping |Pausing |Resuming |Server |backend |Backup Server |Health check |Agent check |"
    r"Connect from |Loading |Exiting |\[(?:NOTICE|WARNING|ALERT|INFO)\] )"
)

# What a HAProxy ring writes when it could not keep messages: "3 events dropped", "1 event dropped".
_DROPPED_PATTERN = re.compile(r"([0-9]{1,10}) events? dropped\Z")

# Accept dates repeat for every request of a second: convert each distinct one once.
_DATE_CACHE_LIMIT = 4096
_httplog_second_cache: dict[str, int] = {}


def parse_line(line: str) -> Request | None:
    """The request in one log line (with or without a syslog header), or None if it holds no request.

    Never raises: a malformed line is None, like an event; `parse_event` tells the two apart.
    """
    try:
        stamp, message = split_syslog(line)
        return parse_message(message, stamp)
    except (ValueError, IndexError, KeyError, OverflowError):
        return None


def parse_message(message: str, syslog_stamp: str = "") -> Request | None:
    """The request in a syslog message body, in the compact or the httplog format, or None.

    `syslog_stamp` is the header's timestamp text, used only when the message carries no usable
    date of its own. May raise ValueError/IndexError on malformed input: use `parse_line` for safety.
    """
    if message.startswith(_COMPACT_PREFIX):
        return _parse_compact(message)
    return _parse_httplog(message, syslog_stamp)


def parse_event(line: str) -> tuple[str, str] | None:
    """What kind of non-request line this is, with its message; None for a malformed line.

    ('dropped', '3 events dropped') for a ring's notice that it lost log messages (read the count
    with `dropped_count`); ('event', text) for HAProxy's other notices, such as
    'Server be/v2-1 is DOWN, reason: ...' or 'Proxy fe started.'. Never raises.
    """
    try:
        message = split_syslog(line)[1].rstrip("\r\n")
    except (ValueError, IndexError):
        return None
    if _DROPPED_PATTERN.match(message):
        return ("dropped", message)
    if _EVENT_PATTERN.match(message):
        return ("event", message)
    return None


def dropped_count(message: str) -> int:
    """How many log messages a ring's 'N events dropped' notice says were lost (0 if it is not one)."""
    match = _DROPPED_PATTERN.match(message)
    return int(match.group(1)) if match else 0


def is_failure(status: int, termination: str) -> bool:
    """Whether a request failed because of the server or the proxy, not because of the client.

    The rule: a request FAILED when
      * its status is 5xx (500-599), whoever produced it; or
      * the first character of its termination state blames the server or HAProxy:
        `S` the server aborted or refused (`SC` refused connection, `SH` bad headers, `SD` aborted
        during data), `s` a server timeout (`sH` no response in time), `P` HAProxy aborted it (connection
        limit, deny rule, or a dangerous server response, `PH`), `R` a resource of HAProxy ran out,
        `I` an internal error, `D` the server was marked down and its sessions killed.
    It did NOT fail when the state is `--` (normal), `C`/`c` (the client aborted or timed out),
    `L` (served locally by HAProxy), `K` (killed by an admin) or `U` (a backup session cut because an
    active server came back), unless its status is 5xx. Status -1 (no response at all) is a failure
    only through the termination state: `CD` is a client abort, `SD` a server one.

    A deny rule or a bad request gives `PR` with server `<NOSRV>`: it counts as failed, but under the
    `<NOSRV>` version, never under a canary's.
    """
    return 500 <= status < 600 or termination[:1] in _BLAMED_TERMINATION


def split_syslog(line: str) -> tuple[str, str]:
    """(timestamp text, message) of a line with an RFC 3164 or RFC 5424 header, or none at all.

    The timestamp is returned unparsed ('' when absent) because request messages carry their own
    accept date: `syslog_second` converts it only when it is needed.
    """
    rest = line
    if rest.startswith("<"):
        end = rest.index(">", 1, 6)
        rest = rest[end + 1 :]
        if rest.startswith("1 "):
            return _split_rfc5424(rest[2:])
    return _split_rfc3164(rest)


def syslog_host(line: str) -> str:
    """The host name in a line's syslog header ('' when the header has none, or there is no header).

    RFC 3164 carries it between the timestamp and the tag (`log-send-hostname`, or a relay's own
    name); RFC 5424 in its HOSTNAME field, '-' meaning none. Never raises.
    """
    rest = line
    if rest.startswith("<"):
        end = rest.find(">", 1, 6)
        if end < 0:
            return ""
        rest = rest[end + 1 :]
        if rest.startswith("1 "):
            fields = rest.split(" ", 3)
            return "" if len(fields) < 4 or fields[2] == "-" else fields[2]
    if len(rest) > 15 and rest[3] == " " and rest[15] == " " and rest[:3] in _MONTHS:
        stamp_end = 15
    elif rest[:4].isdigit() and "T" in rest[:11] and " " in rest:
        stamp_end = rest.index(" ")
    else:
        return ""
    tag_end = rest.find(": ", stamp_end)
    if tag_end < 0:
        return ""
    host, space, tag = rest[stamp_end + 1 : tag_end].partition(" ")
    return host if space and " " not in tag else ""


def syslog_second(stamp: str, now: float | None = None) -> int:
    """Epoch second of a syslog timestamp: RFC 5424/ISO 8601, or RFC 3164 ('Nov 26 12:18:15').

    RFC 3164 dates have no year and are local time: the year is the one that puts the date closest
    to `now` (so a December line read on January 1st stays in December). Raises ValueError.
    """
    if stamp[:4].isdigit():
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is None:
            return int(time.mktime(moment.timetuple()))
        return int(moment.timestamp())
    month = _MONTHS[stamp[:3]]
    day = int(stamp[4:6])
    hour, minute, second = (int(part) for part in stamp[7:15].split(":"))
    now = time.time() if now is None else now
    year = time.localtime(now).tm_year
    candidates = [
        time.mktime((candidate, month, day, hour, minute, second, 0, 0, -1))
        for candidate in (year - 1, year, year + 1)
    ]
    return int(min(candidates, key=lambda epoch: abs(epoch - now)))


def _split_rfc3164(rest: str) -> tuple[str, str]:
    """Split 'Mmm dd hh:mm:ss [host] tag[pid]: MSG' (or an ISO timestamp instead of the date)."""
    if len(rest) > 15 and rest[3] == " " and rest[15] == " " and rest[:3] in _MONTHS:
        stamp_end = 15
    elif rest[:4].isdigit() and "T" in rest[:11]:
        stamp_end = rest.index(" ")
    else:
        return "", rest
    # Host and tag hold no spaces, so the tag ends at the first ': ' and at most one space precedes it.
    tag_end = rest.find(": ", stamp_end)
    if tag_end < 0 or rest.count(" ", stamp_end + 1, tag_end) > 1:
        raise ValueError("RFC 3164 header without a tag")
    return rest[:stamp_end], rest[tag_end + 2 :]


def _split_rfc5424(rest: str) -> tuple[str, str]:
    """Split 'TIMESTAMP HOST APP PROCID MSGID SD MSG' (after '<PRI>1 ')."""
    stamp, _host, _app, _procid, _msgid, after = rest.split(" ", 5)
    if after.startswith("- "):
        message = after[2:]
    elif after == "-":
        message = ""
    else:
        message = _skip_structured_data(after)
    if message.startswith("\ufeff"):
        message = message[1:]
    return ("" if stamp == "-" else stamp), message


def _skip_structured_data(text: str) -> str:
    """The message after RFC 5424 structured data '[id k="v"]...': quotes may hold ']' escaped or not."""
    position = 0
    while position < len(text) and text[position] == "[":
        position += 1
        in_quotes = False
        while True:
            character = text[position]
            if character == "\\" and in_quotes:
                position += 2
                continue
            position += 1
            if character == '"':
                in_quotes = not in_quotes
            elif character == "]" and not in_quotes:
                break
    if position == 0:
        raise ValueError("RFC 5424 structured data must be '-' or start with '['")
    return text[position + 1 :]


def _parse_compact(message: str) -> Request:
    """Parse 'fm1 %Ts.%ms %b %s %ST %Tr %Ta %B %ts %ci'; raises ValueError unless it has 10 fields."""
    _tag, accepted, backend, server, status, tr_ms, ta_ms, sent_bytes, termination, _client = message.split(
        " "
    )
    if len(termination) != 2:
        raise ValueError(f"termination state must have 2 characters, got {termination!r}")
    return (
        int(accepted.partition(".")[0]),
        backend,
        server,
        int(status),
        int(tr_ms),
        int(ta_ms),
        int(sent_bytes),
        termination,
    )


def _parse_httplog(message: str, syslog_stamp: str) -> Request | None:
    """Parse the first eleven fields of an `option httplog` message."""
    fields = message.split(" ", 11)
    if len(fields) < 11:
        return None
    accept_date, target, timers, termination = fields[1], fields[3], fields[4], fields[9]
    if accept_date[:1] != "[" or accept_date[-1:] != "]" or len(termination) != 4:
        return None
    timer_values = timers.split("/")
    if len(timer_values) != 5 or fields[10].count("/") != 4:
        return None
    backend, slash, server = target.partition("/")
    if not slash:
        return None
    second = _httplog_second(accept_date[1:21], syslog_stamp)
    return (
        second,
        backend,
        server,
        int(fields[5]),
        int(timer_values[3]),
        int(timer_values[4]),
        int(fields[6]),
        termination[:2],
    )


def _httplog_second(date_text: str, syslog_stamp: str) -> int:
    """Epoch second of '26/Nov/2026:12:38:53' (local time), or of the syslog stamp if it is unreadable."""
    second = _httplog_second_cache.get(date_text)
    if second is not None:
        return second
    try:
        second = _local_date_to_epoch(date_text)
    except (ValueError, KeyError, IndexError, OverflowError):
        if not syslog_stamp:
            raise
        return syslog_second(syslog_stamp)
    if len(_httplog_second_cache) >= _DATE_CACHE_LIMIT:
        _httplog_second_cache.clear()
    _httplog_second_cache[date_text] = second
    return second


def _local_date_to_epoch(date_text: str) -> int:
    """'26/Nov/2026:12:38:53' in local time → epoch seconds."""
    if len(date_text) != 20 or date_text[2] != "/" or date_text[6] != "/" or date_text[11] != ":":
        raise ValueError(f"not an HAProxy date: {date_text!r}")
    hour, minute, second = (int(part) for part in date_text[12:].split(":"))
    fields = (int(date_text[7:11]), _MONTHS[date_text[3:6]], int(date_text[:2]), hour, minute, second)
    return int(time.mktime((*fields, 0, 0, -1)))


def clear_date_cache() -> None:
    """Forget converted httplog dates; needed only when the process changes its time zone (tests)."""
    _httplog_second_cache.clear()
