"""The vectorised path of `summarize` (bulk.scan_httplog on whole chunks) against a line-by-line reference.

The reference below parses each line with `parse_line`/`parse_event` and computes the summary with
plain Python (sorted lists for quantiles), independently of summarize.py. A file summarised through
the fast paths must give exactly the same result, whatever the lines hold.
"""

from __future__ import annotations

import importlib
import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fridaymorning.ingest.bulk import scan_httplog
from fridaymorning.ingest.fastpath import DateCache, HeaderCache
from fridaymorning.ingest.haproxy_log import is_failure, parse_event, parse_line
from fridaymorning.ingest.summarize import summarize
from fridaymorning.models import STATUS_CLASSES
from fridaymorning.testing import httplog_line as httplog
from fridaymorning.testing import local_time_zone, mutated

summarize_module = importlib.import_module("fridaymorning.ingest.summarize")

HEADERS = [
    "Nov 26 12:38:53 lb1 haproxy[6027]: ",
    "<134>Nov 26 12:38:53 haproxy[6027]: ",
    "<134>Nov  6 12:38:53 lb1 haproxy[6027]: ",
    "<134>Nov 26 12:38:54 lb1.example.com haproxy[6027]: ",
    "2026-11-26T12:38:53.468000+00:00 myhost haproxy[6027]: ",
    "<134>1 2026-11-26T12:38:53.468000+00:00 myhost haproxy 6027 - - ",
    "",
]


# Every httplog and compact case of test_haproxy_log.py, and what the fast path must hand back.
EDGE_MESSAGES = [
    httplog(),
    "fm1 1795696733.462 be v1-1 200 4 9 73 -- 127.0.0.1",
    "fm1 1795696730.450 be v2-1 503 -1 3005 217 SC 127.0.0.1",
    "fm1 1795696736.601 fe <NOSRV> 400 -1 +0 +120 PR 2001:db8::7",
    httplog(client="127.0.0.1:41062", timers="0/0/-1/-1/3003", status="503", size="217", termination="SC--"),
    httplog(
        client="::ffff:10.0.0.1:39190",
        target="hl/<NOSRV>",
        timers="-1/-1/-1/-1/0",
        status="-1",
        size="0",
        termination="CR--",
        tail=' 0/0 "<BADREQ>"',
    ),
    httplog(
        client="[2001:db8::1]:443",
        target="be/v3-2",
        timers="1/0/2/30/+33",
        status="302",
        size="+512",
        termination="--NI",
        counts="9/9/3/1/0",
        tail=' 0/0 {Mozilla/5.0 (X11; Linux) x|example.com} {no cache|} "GET /a b c HTTP/1.1"',
    ),
    httplog(client="10.1.2.3:5", tail=' 0/0 "GET / HTTP/1.1"'),
    httplog(date="[26/XXX/2026:12:38:53.468]"),
    httplog(timers="0/0/1/4"),
    httplog(target="bev1-1"),
    httplog(status="two"),
    httplog()[:60],
    "fm1 1795696733.462 be v1-1 200 4 9 73 --",
    "fm1 1795696733.462 be v1-1 200 4 9 73 -- 127.0.0.1 extra",
    "fm1 1795696733.462 be v1-1 OK 4 9 73 -- 127.0.0.1",
    "fm1 notatime be v1-1 200 4 9 73 -- 127.0.0.1",
    "fm1 1795696733.462 be v1-1 200 4 9 73 --- 127.0.0.1",
    "Proxy fe started.",
    'Server be/v2-1 is DOWN, reason: Layer4 connection problem, info: "Connection refused".',
    "backend be has no server available!",
    "125 events dropped",
    "3 events dropped twice",
    "random words",
    # Beyond test_haproxy_log: what the vectorised reader must measure exactly or hand back.
    httplog(client="fm1"),
    httplog(timers="0/0/1/+4/-9", status="+200", size="-73"),
    httplog(timers="0/0/1/4/1_0"),
    httplog(status="1_0"),
    httplog(size="12345678901234567"),
    httplog(size="1234567890123456"),
    httplog(timers="0/0/1/1234567890123456/12345678"),
    httplog(timers="0/0/1/12345678901234567/1"),
    httplog(timers="0/0/1/99999999999999999999/123456789012345678901234567890"),
    httplog(timers="0/0/1/-/1"),
    httplog(timers="1000000/2000000/3000000/4000000/5000000000"),
    httplog(timers="0/0/1/4/9/"),
    httplog(timers="/0/0/1/4"),
    httplog(timers="0//1/4/9"),
    httplog(target="b/" + "s" * 60),
    httplog(target="b" * 20 + "/" + "s" * 27),
    httplog(target="b" * 20 + "/" + "s" * 28),
    httplog(target="be/v1/extra"),
    httplog(target="/v1-1"),
    httplog(target="be/"),
    httplog(target="-"),
    httplog(status="600"),
    httplog(status="99"),
    httplog(status="0503"),
    httplog(status="-5", termination="sH--"),
    httplog(status=""),
    httplog(termination="SC-"),
    httplog(termination="SC---"),
    httplog(termination="PR--"),
    httplog(termination="D---"),
    httplog(termination="cD--"),
    httplog(counts="4/1/0/0"),
    httplog(counts="4/1/0/0/0/"),
    httplog(counts="1234567/1234567/1234567/1234567/0"),
    httplog(counts="12345678/12345678/12345678/12345678/12345678", tail=""),
    httplog(counts="4/1/0/0/0", tail=""),
    httplog(counts="", tail=""),
    httplog(tail=" "),
    httplog(date="[26/Nov/2026:12:38:53]"),
    httplog(date="[26/Nov/2026:12:38:5]"),
    httplog(date="[26/Nov/2026:12:38:53.4"),
    httplog(date="26/Nov/2026:12:38:53.468]"),
    httplog(date="[26/Nov/2026:25:38:53.468]"),
    httplog(date="[1/Nov/2026:12:38:53.468]"),
    httplog(date="[26/Nov/2026 12:38:53.468]"),
    httplog(client="1234:5"),
    httplog(client="1234T:5"),
    httplog(client="2001Tdb8::1:5", tail=' 0/0 {a: b} "GET / HTTP/1.1"'),
    httplog(client="<1>x:5"),
    httplog(client="abc"),
    httplog(client=""),
    httplog(client="[x]"),
    httplog().replace(" hl ", "  "),
    httplog().replace(" 200 ", "  200 "),
    httplog().replace(" ", "\t", 3),
    httplog() + " ",
    httplog() + "\x0b",
    httplog(size="73\x0c"),
    httplog(size="\x1c73"),
    "Nov 26 12:38:53 lb1 haproxy[6027]:" + httplog(),
    "Nov 26 12:38:53 lb1 haproxy [6027]: " + httplog(),
    "Nov 26 12:38:53 lb1 my host haproxy[6027]: " + httplog(),
    "Nov 26 12:38:53 lb1: haproxy[6027]: " + httplog(),
    "Nov 26 12:38:53 lb1 haproxy[6027]:: " + httplog(),
    "Nov 26 12:38:53 " + "h" * 60 + " haproxy[6027]: " + httplog(),
    "<134>Nov 26 12:38:53 haproxy[6027]:  " + httplog(),
    "<134>Dec 32 12:38:53 haproxy[6027]: " + httplog(),
    "<134>Nov 26 12:38:53 haproxy[6027]: " + httplog(date="[26/XXX/2026:12:38:53.468]"),
    "<134>1 2026-11-26T12:38:54+00:00 h haproxy 1 - - " + httplog(date="[26/XXX/2026:12:38:53.468]"),
    "<13>Nov 26 12:38:53 x: " + httplog(),
    "<1>" + httplog(),
    "Nov 26 12:38:53 lb1 haproxy[6027]: fm1 " + httplog(),
]


def edge_lines() -> list[str]:
    lines = [header + message for message in EDGE_MESSAGES for header in HEADERS]
    lines += ["", " ", "\t", "  \x0c ", "garbage \x00 bytes", "caf\u00e9 " + httplog(), httplog() + " \u00e9"]
    return lines


def generated_lines(count: int, seed: int) -> list[str]:
    """Well-formed httplog lines like bench/collector.py writes, with a few servers and statuses."""
    rng = random.Random(seed)
    servers = ("v1-1", "v1-2", "v2-1", "<NOSRV>")
    lines = []
    for index in range(count):
        tr_ms = int(rng.lognormvariate(3, 1.2)) if index % 17 else -1
        status, termination = rng.choice(
            (
                (200, "----"),
                (503, "SC--"),
                (404, "----"),
                (200, "CD--"),
                (500, "----"),
                (599, "--NI"),
                (101, "----"),
            )
        )
        header = rng.choice(HEADERS[:5]) if index % 5 else HEADERS[0]
        lines.append(
            header
            + httplog(
                client=f"10.0.{index % 7}.1:{40000 + index % 20000}",
                date=f"[26/Nov/2026:12:38:{index % 60:02d}.{index % 1000:03d}]",
                target=f"be{index % 2}/{servers[index % len(servers)]}",
                timers=f"{index % 3}/0/{index % 2}/{tr_ms}/{max(tr_ms, 0) + rng.randint(0, 50_000)}",
                status=str(status),
                size=str(rng.randint(0, 10**9)),
                termination=termination,
                counts=f"{index % 9}/1/0/0/{index % 2}",
            )
        )
    return lines


def reference(lines: list[str]) -> dict[str, Any]:
    """The summary of text lines, each parsed alone, computed with plain Python."""
    servers: dict[tuple[str, str], dict[str, Any]] = {}
    total = requests = rejected = 0
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        total += 1
        request = parse_line(line)
        if request is None:
            rejected += parse_event(line) is None
            continue
        requests += 1
        _, backend, server, status, tr_ms, ta_ms, _, termination = request
        entry = servers.setdefault(
            (backend, server), {"requests": 0, "status": [0] * 6, "failed": 0, "tr": [], "ta": []}
        )
        entry["requests"] += 1
        entry["status"][status // 100 - 1 if 100 <= status < 600 else 5] += 1
        entry["failed"] += is_failure(status, termination)
        entry["tr"] += [tr_ms] if tr_ms >= 0 else []
        entry["ta"] += [ta_ms] if ta_ms >= 0 else []
    return {
        "lines": total,
        "requests": requests,
        "rejected": rejected,
        "servers": [
            {
                "backend": backend,
                "server": server,
                "requests": entry["requests"],
                "status": dict(zip(STATUS_CLASSES, entry["status"], strict=True)),
                "failed": entry["failed"],
                "tr_ms": quantiles(entry["tr"]),
                "ta_ms": quantiles(entry["ta"]),
            }
            for (backend, server), entry in sorted(servers.items())
        ],
    }


def quantiles(values: list[int]) -> dict[str, int | None]:
    ordered = sorted(values)
    return {
        name: ordered[int(q * (len(ordered) - 1))] if ordered else None
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
    }


def summarize_file(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8", errors="replace") as stream:
        return summarize(stream)


def text_lines(path: Path) -> list[str]:
    """The lines as the text layer reads them (universal newlines, UTF-8 with replacement)."""
    with path.open(encoding="utf-8", errors="replace") as stream:
        return list(stream)


@pytest.fixture(autouse=True)
def utc_time_zone() -> Iterator[None]:
    """httplog dates are local time: run every test in UTC, whatever the machine's zone."""
    with local_time_zone("UTC0"):
        yield


@pytest.fixture(params=[4 * 1024 * 1024, 997], ids=["one-chunk", "small-chunks"])
def chunk_bytes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Whole files in one chunk, and in chunks of a few lines (lines then span reads)."""
    monkeypatch.setattr(summarize_module, "_CHUNK_BYTES", request.param)
    return int(request.param)


def test_mixed_corpus_equals_the_line_by_line_reference(tmp_path: Path, chunk_bytes: int) -> None:
    """Well-formed lines mixed with every edge case, in any order: the same summary as the reference."""
    lines = generated_lines(3000, seed=1) + edge_lines()
    random.Random(2).shuffle(lines)
    path = tmp_path / "mixed.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert summarize_file(path) == reference(text_lines(path))


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r", ""], ids=["lf", "crlf", "cr", "no-final-newline"])
def test_line_endings(tmp_path: Path, chunk_bytes: int, ending: str) -> None:
    """CR and CRLF (universal newlines) and a last line without a newline are read like the text layer."""
    lines = generated_lines(200, seed=3) + edge_lines()
    path = tmp_path / "endings.log"
    path.write_bytes((ending or "\n").join(lines).encode() + (b"" if ending == "" else ending.encode()))
    assert summarize_file(path) == reference(text_lines(path))


def test_invalid_utf8_and_control_bytes(tmp_path: Path, chunk_bytes: int) -> None:
    """Bytes that are not UTF-8 are decoded with replacement; form feeds and the like do not end lines."""
    good = [line.encode() for line in generated_lines(100, seed=4)]
    odd = [good[0] + b"\xff", b"\xc3" + good[1], good[2].replace(b" 200 ", b" 2\xe900 "), b"\x1c\x1d\x1e\x85"]
    odd += [good[3].replace(b"be0/", b"b\x0c/"), good[4] + b"\x0b" + good[5], b"\xe2\x80\xa8" + good[6]]
    path = tmp_path / "bytes.log"
    path.write_bytes(b"\n".join(good + odd + good) + b"\n")
    assert summarize_file(path) == reference(text_lines(path))


def test_many_servers_and_timers_beyond_the_dense_range(tmp_path: Path, chunk_bytes: int) -> None:
    """Hundreds of servers in one chunk and timers of minutes are counted sparsely, still exactly."""
    rng = random.Random(7)
    lines = [
        HEADERS[0]
        + httplog(
            target=f"be/s{index % 300}",
            timers=f"0/0/0/{rng.choice((0, 5, 2047, 2048, 70_000, 10**12))}/{rng.randint(0, 10**7)}",
        )
        for index in range(3000)
    ]
    path = tmp_path / "servers.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = summarize_file(path)
    assert len(summary["servers"]) == 300
    assert summary == reference(text_lines(path))


def test_well_formed_lines_take_the_vectorised_path() -> None:
    """Generated lines (bare or behind RFC 3164 headers) are all read by scan_httplog, none handed back."""
    lines = [line for line in generated_lines(2000, seed=5) if not line.startswith("<134>1 ")]
    columns = scan_httplog("\n".join(lines).encode() + b"\n", HeaderCache(), DateCache())
    assert (len(columns.target), columns.rest, columns.dirty) == (len(lines), [], [])
    assert sorted(columns.targets) == sorted({line.split(" hl ")[1].split(" ")[0].encode() for line in lines})


def test_unusual_lines_are_handed_back_not_misread() -> None:
    """Lines the vectorised reader cannot prove it reads like parse_line come back for the exact path."""
    headed = [HEADERS[0] + message for message in EDGE_MESSAGES]
    columns = scan_httplog("\n".join(headed).encode(), HeaderCache(), DateCache())
    taken = len(columns.target)
    assert taken + len(columns.rest) == len(headed)
    assert 0 < taken < len(headed) // 2
    assert (
        HEADERS[0] + httplog(timers="1/0/2/30/+33")
    ).encode() not in columns.rest  # "+" timers are read here too
    assert (HEADERS[0] + httplog(client="fm1")).encode() in columns.rest


def test_text_stream_not_read_as_utf8_is_read_line_by_line(tmp_path: Path) -> None:
    """A file opened with another encoding is not read through its bytes."""
    path = tmp_path / "latin1.log"
    path.write_bytes(HEADERS[0].encode() + httplog(target="b\xe9/v1").encode("latin-1") + b"\n")
    with path.open(encoding="latin-1") as stream:
        summary = summarize(stream)
    assert summary["servers"][0]["backend"] == "b\u00e9"


HTTPLOG_ALPHABET = " /-+[]:.0123456789SCD<>_fm\t"


def mutated_httplog() -> st.SearchStrategy[str]:
    """A well-formed line (sometimes an edge case) with a few characters replaced, inserted or deleted."""
    return mutated(generated_lines(40, seed=6) + edge_lines(), HTTPLOG_ALPHABET).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_httplog(), min_size=1, max_size=40), st.sampled_from([4 * 1024 * 1024, 301]))
def test_mutated_lines_never_raise_and_equal_the_reference(lines: list[str], chunk: int) -> None:
    """Mutated httplog lines, whole or cut into small chunks: never raises, same summary as the reference."""
    content = ("\n".join(lines) + "\n").encode("utf-8", "replace")
    # The module, not the function the package exports under its name; a fixture would not reset per example.
    saved = vars(summarize_module)["_CHUNK_BYTES"]
    vars(summarize_module)["_CHUNK_BYTES"] = chunk
    try:
        stream = io.TextIOWrapper(io.BytesIO(content), encoding="utf-8", errors="replace")
        fast = summarize(stream)
    finally:
        vars(summarize_module)["_CHUNK_BYTES"] = saved
    slow = reference(list(io.TextIOWrapper(io.BytesIO(content), encoding="utf-8", errors="replace")))
    assert fast == slow
