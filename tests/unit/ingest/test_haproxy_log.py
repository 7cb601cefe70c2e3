"""The pure parsers of HAProxy log lines: syslog headers, httplog, the compact format, events, failures.

The sample messages were captured from HAProxy 2.6.12 on this project's machines, then trimmed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from fridaymorning.ingest.haproxy_log import (
    COMPACT_LOG_FORMAT,
    dropped_count,
    is_failure,
    parse_event,
    parse_line,
    parse_message,
    split_syslog,
    syslog_second,
)
from fridaymorning.testing import local_time_zone

# 2026-11-26 12:38:53 UTC
SECOND = 1795696733

COMPACT = "fm1 1795696733.462 be v1-1 200 4 9 73 -- 127.0.0.1"
HTTPLOG = (
    "127.0.0.1:41054 [26/Nov/2026:12:38:53.468] hl be/v1-1 0/0/1/4/9 200 73 - - ---- "
    '4/1/0/0/0 0/0 {Mozilla 5 x} "GET /x?a=b HTTP/1.1"'
)
COMPACT_REQUEST = (SECOND, "be", "v1-1", 200, 4, 9, 73, "--")


@pytest.fixture(autouse=True)
def utc_time_zone() -> Iterator[None]:
    """httplog dates are local time: run every test in UTC, whatever the machine's zone."""
    with local_time_zone("UTC0"):
        yield


def test_compact_format_constant_is_the_one_verified_against_haproxy() -> None:
    """The router renders this exact string into haproxy.cfg; the parser expects its 10 fields."""
    assert COMPACT_LOG_FORMAT == "fm1 %Ts.%ms %b %s %ST %Tr %Ta %B %ts %ci"
    assert len(COMPACT_LOG_FORMAT.split(" ")) == len(COMPACT.split(" ")) == 10


@pytest.mark.parametrize(
    "header",
    [
        "<134>Nov 26 12:38:53 haproxy[6027]: ",
        "<134>Nov 26 12:38:53 myhost haproxy[6027]: ",
        "<134>Nov  6 12:38:53 haproxy[6027]: ",
        "Nov 26 12:38:53 myhost haproxy[6027]: ",
        "<134>1 2026-11-26T12:38:53.468000+00:00 myhost haproxy 6027 - - ",
        '<134>1 2026-11-26T12:38:53.468000+00:00 myhost haproxy 6027 - [meta k="a] b\\" c"][x@1 y="2"] ',
        "2026-11-26T12:38:53.468000+00:00 myhost haproxy[6027]: ",
        "",
    ],
    ids=["rfc3164", "rfc3164-host", "rfc3164-day-padded", "logfile", "rfc5424", "rfc5424-sd", "iso", "bare"],
)
@pytest.mark.parametrize("message", [COMPACT, HTTPLOG], ids=["compact", "httplog"])
def test_every_header_yields_the_same_request(header: str, message: str) -> None:
    """A message parses identically whatever syslog header (or none) carries it."""
    expected = parse_message(message)
    assert expected is not None
    assert parse_line(header + message) == expected


def test_split_syslog_returns_the_unparsed_stamp_and_the_message() -> None:
    """The header's timestamp is kept as text (parsed only as a fallback), the message is untouched."""
    assert split_syslog(f"<134>Nov 26 12:38:53 haproxy[6027]: {COMPACT}") == ("Nov 26 12:38:53", COMPACT)
    assert split_syslog(f"<134>1 2026-11-26T12:38:53.1+00:00 h haproxy 1 - - {COMPACT}") == (
        "2026-11-26T12:38:53.1+00:00",
        COMPACT,
    )


def test_compact_line_parses_to_the_request_tuple() -> None:
    """The compact format gives (second, backend, server, status, Tr, Ta, bytes, termination)."""
    assert parse_line(f"<134>Nov 26 12:38:56 haproxy[6027]: {COMPACT}") == COMPACT_REQUEST


def test_compact_second_comes_from_the_accept_date_not_the_syslog_header() -> None:
    """HAProxy logs at the end of a request: the header's second is later than the accept second."""
    line = "<134>Nov 26 12:38:56 haproxy[1]: fm1 1795696730.450 be v2-1 503 -1 3005 217 SC 127.0.0.1"
    assert parse_line(line) == (1795696730, "be", "v2-1", 503, -1, 3005, 217, "SC")


def test_compact_nosrv_and_logasap_plus_signs() -> None:
    """`<NOSRV>` is kept as the server name; the `+` of option logasap is dropped from Ta and bytes."""
    line = "fm1 1795696736.601 fe <NOSRV> 400 -1 +0 +120 PR 2001:db8::7"
    assert parse_line(line) == (1795696736, "fe", "<NOSRV>", 400, -1, 0, 120, "PR")


def test_httplog_line_parses_accept_date_timers_and_termination() -> None:
    """httplog: the second is the bracketed accept date, Tr/Ta the 4th/5th timers, 2 chars of the state."""
    assert parse_line(HTTPLOG) == (SECOND, "be", "v1-1", 200, 4, 9, 73, "--")


def test_httplog_server_error_with_minus_one_timers() -> None:
    """A refused connection: Tc and Tr are -1, the state is SC--, retries are counted."""
    message = (
        "127.0.0.1:41062 [26/Nov/2026:12:38:53.474] hl be/v2-1 0/0/-1/-1/3003 503 217 - - SC-- "
        '2/1/0/0/3 0/0 {Mozilla 5 x} "GET /x?a=b HTTP/1.1"'
    )
    assert parse_line(message) == (SECOND, "be", "v2-1", 503, -1, 3003, 217, "SC")


def test_httplog_badreq_nosrv_status_minus_one_and_ipv6_client() -> None:
    """`<BADREQ>`, `<NOSRV>`, status -1 and an IPv6 client with its port all parse."""
    message = (
        "::ffff:10.0.0.1:39190 [26/Nov/2026:12:38:53.601] hl hl/<NOSRV> -1/-1/-1/-1/0 -1 0 - - CR-- "
        '2/1/0/0/0 0/0 "<BADREQ>"'
    )
    assert parse_line(message) == (SECOND, "hl", "<NOSRV>", -1, -1, 0, 0, "CR")


def test_httplog_captured_headers_with_spaces_and_braces_do_not_shift_fields() -> None:
    """Two captured-header blocks full of spaces, and a request line with spaces, are ignored."""
    message = (
        "[2001:db8::1]:443 [26/Nov/2026:12:38:53.000] fe~ be/v3-2 1/0/2/30/+33 302 +512 SID=ab - --NI "
        '9/9/3/1/0 0/0 {Mozilla/5.0 (X11; Linux) x|example.com} {no cache|} "GET /a b c HTTP/1.1"'
    )
    assert parse_line(message) == (SECOND, "be", "v3-2", 302, 30, 33, 512, "--")


def test_httplog_without_captures() -> None:
    """Without `capture` directives the request line follows the queue field directly."""
    message = (
        "10.1.2.3:5 [26/Nov/2026:12:38:53.999] fe be/v1-1 0/0/0/1/1 204 0 - - ---- "
        '1/1/0/0/0 0/0 "GET / HTTP/1.1"'
    )
    assert parse_line(message) == (SECOND, "be", "v1-1", 204, 1, 1, 0, "--")


def test_httplog_date_is_read_in_local_time() -> None:
    """HAProxy writes local time without a zone: 12:38:53 in UTC+1 is 11:38:53 UTC."""
    with local_time_zone("CET-1"):
        request = parse_line(HTTPLOG)
        assert request is not None
        assert request[0] == SECOND - 3600


def test_httplog_falls_back_to_the_syslog_date_when_its_own_is_unreadable() -> None:
    """A mangled accept date is replaced by the header's date rather than rejecting the request."""
    mangled = HTTPLOG.replace("[26/Nov/2026:12:38:53.468]", "[26/XXX/2026:12:38:53.468]")
    line = f"<134>1 2026-11-26T12:38:54+00:00 h haproxy 1 - - {mangled}"
    request = parse_line(line)
    assert request is not None
    assert request[0] == SECOND + 1
    assert parse_line(mangled) is None


def test_rfc3164_dates_take_the_year_closest_to_now() -> None:
    """RFC 3164 has no year: a December 31st line read on January 1st belongs to the past year."""
    new_year = time.mktime((2027, 1, 1, 0, 0, 5, 0, 0, -1))
    assert syslog_second("Dec 31 23:59:59", now=new_year) == int(new_year) - 6
    assert syslog_second("Nov 26 12:38:53", now=SECOND + 10) == SECOND


@pytest.mark.parametrize(
    "line",
    [
        "",
        "<134>",
        "<134>Nov 26 12:38:53 haproxy[1]: ",
        "<134>Nov 26 12:38:53 no tag here at all",
        "fm1 1795696733.462 be v1-1 200 4 9 73 --",
        "fm1 1795696733.462 be v1-1 200 4 9 73 -- 127.0.0.1 extra",
        "fm1 1795696733.462 be v1-1 OK 4 9 73 -- 127.0.0.1",
        "fm1 notatime be v1-1 200 4 9 73 -- 127.0.0.1",
        "fm1 1795696733.462 be v1-1 200 4 9 73 --- 127.0.0.1",
        HTTPLOG.replace("0/0/1/4/9", "0/0/1/4"),
        HTTPLOG.replace("be/v1-1", "bev1-1"),
        HTTPLOG.replace(" 200 ", " two "),
        HTTPLOG[:60],
        '<134>1 2026-11-26T12:38:53Z h haproxy 1 - [unterminated k="v',
        "<999999>Nov 26 12:38:53 haproxy[1]: x",
        "\x00\xff\ufffd garbage",
    ],
)
def test_malformed_lines_are_none_and_never_raise(line: str) -> None:
    """parse_line returns None for anything it cannot read fully; the caller counts it as rejected."""
    assert parse_line(line) is None


@pytest.mark.parametrize(
    "message",
    [
        "Proxy fe started.",
        "Proxy be stopped (cumulated conns: FE: 0, BE: 12).",
        "Stopping proxy fe in 0 ms.",
        "Stopping backend be in 0 ms.",
        'Server be/v2-1 is DOWN, reason: Layer4 connection problem, info: "Connection refused".',
        "Server be/v2-1 is UP, reason: Layer7 check passed, code: 200, check duration: 1ms.",
        "backend be has no server available!",
        "Health check for server be/v2-1 failed, reason: Layer4 timeout",
    ],
)
def test_haproxy_notices_are_events_not_requests(message: str) -> None:
    """HAProxy's own notices parse as ('event', text), and never as requests."""
    line = f"<133>Nov 26 12:38:53 haproxy[6027]: {message}"
    assert parse_line(line) is None
    assert parse_event(line) == ("event", message)


@pytest.mark.parametrize(
    ("line", "event", "count"),
    [
        ("<134>Nov 26 12:38:53 haproxy[6027]: 1 event dropped", ("dropped", "1 event dropped"), 1),
        ("<134>Nov 26 12:38:53 haproxy[6027]: 125 events dropped", ("dropped", "125 events dropped"), 125),
        (
            "<134>1 2026-11-26T12:38:53Z lb1 haproxy 6027 - - 7 events dropped",
            ("dropped", "7 events dropped"),
            7,
        ),
        ("3 events dropped", ("dropped", "3 events dropped"), 3),
        ("<134>Nov 26 12:38:53 haproxy[6027]: 3 events dropped twice", None, 0),
        ("<134>Nov 26 12:38:53 haproxy[6027]: x events dropped", None, 0),
    ],
)
def test_ring_drop_notices_are_recognised_with_their_count(
    line: str, event: tuple[str, str] | None, count: int
) -> None:
    """A HAProxy ring's '%u event%s dropped' notice is a ('dropped', text) event whose count is read;
    lookalikes are not."""
    assert parse_line(line) is None
    assert parse_event(line) == event
    assert dropped_count(event[1] if event else line) == count


@pytest.mark.parametrize("line", [COMPACT, HTTPLOG, "random words", "", "<1>"])
def test_requests_and_garbage_are_not_events(line: str) -> None:
    """Only HAProxy's notices are events; requests and garbage are not."""
    assert parse_event(line) is None


@pytest.mark.parametrize(
    ("status", "termination", "failed", "why"),
    [
        (200, "--", False, "normal completion"),
        (404, "--", False, "a 4xx is the client's problem"),
        (500, "--", True, "5xx from the server"),
        (503, "SC", True, "connection refused by the server"),
        (503, "--", True, "5xx returned locally still fails (e.g. no server available)"),
        (504, "sH", True, "server timeout waiting for headers"),
        (502, "SH", True, "server aborted before complete headers"),
        (-1, "SD", True, "server aborted during data, no status"),
        (200, "SD", True, "server aborted a 200 mid-body"),
        (502, "PH", True, "proxy blocked a dangerous server response"),
        (403, "PR", True, "denied by the proxy"),
        (500, "IR", True, "internal error"),
        (200, "RC", True, "proxy ran out of a resource"),
        (200, "DD", True, "server marked down, its session killed"),
        (-1, "CD", False, "client aborted during data"),
        (-1, "CR", False, "client aborted while sending the request"),
        (408, "cR", False, "client timeout"),
        (200, "cD", False, "client timeout during data"),
        (200, "LR", False, "served locally by HAProxy"),
        (200, "KD", False, "killed by an admin"),
        (200, "UD", False, "backup session cut when an active server came back"),
        (-1, "--", False, "no status and nothing blamed"),
        (599, "--", True, "top of the 5xx range"),
        (600, "--", False, "not an HTTP 5xx"),
    ],
)
def test_failure_rule_table(status: int, termination: str, failed: bool, why: str) -> None:
    """Failed = status 5xx, or a termination state blaming the server or the proxy (S s P R I D)."""
    assert is_failure(status, termination) is failed, why
