"""Property tests: the collector's and the summary's fast paths never raise, account for every line,
and count exactly what the slow path (`parse_line` on each line) counts."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fridaymorning.ingest.aggregate import Aggregator
from fridaymorning.ingest.haproxy_log import dropped_count, parse_event, parse_line
from fridaymorning.ingest.pipeline import IngestPipeline
from fridaymorning.ingest.summarize import summarize
from fridaymorning.testing import local_time_zone, mutated

VALID_LINES = [
    b"<134>Nov 26 12:38:53 haproxy[6027]: fm1 1795696733.462 be v1-1 200 4 9 73 -- 127.0.0.1",
    b"<134>Nov  6 12:38:53 lb1 haproxy[6027]: fm1 1795696734.002 be v2-1 503 -1 3005 217 SC 10.0.0.1",
    b"Nov 26 12:38:53 lb1 haproxy[6027]: 127.0.0.1:41054 [26/Nov/2026:12:38:53.468] hl be/v1-1 "
    b'0/0/1/4/9 200 73 - - ---- 4/1/0/0/0 0/0 {Mozilla 5 x} "GET /x?a=b HTTP/1.1"',
    b"<134>Nov 26 12:38:53 haproxy[6027]: Server be/v2-1 is DOWN, reason: Layer4 connection problem.",
    b"<134>Nov 26 12:38:53 haproxy[6027]: 12 events dropped",
    b"<134>1 2026-11-26T12:38:53.1+00:00 lb1 haproxy 6027 - - fm1 1795696733.462 be v1-1 200 4 9 73 -- c",
]
ALPHABET = b" -/.:[]<>0123456789abfmv\n\r\t\x0b\xc3\xa9\x1cSCD"


@pytest.fixture(autouse=True)
def utc_time_zone() -> Iterator[None]:
    """httplog dates are local time: run every test in UTC, whatever the machine's zone."""
    with local_time_zone("UTC0"):
        yield


def mutated_line() -> st.SearchStrategy[bytes]:
    """A valid line with a few bytes replaced, inserted or deleted."""
    return mutated(VALID_LINES, ALPHABET).map(bytes)


datagrams = st.lists(st.one_of(mutated_line(), st.binary(max_size=80)), min_size=1, max_size=12)


def reference(datagram_list: list[bytes]) -> tuple[dict[str, int], list[tuple[object, ...]]]:
    """What the slow path alone counts: each datagram decoded, split, and parsed line by line."""
    aggregator = Aggregator()
    counts = {"lines": 0, "requests": 0, "events": 0, "rejected": 0, "ring_dropped": 0}
    for datagram in datagram_list:
        for line in datagram.decode("utf-8", "replace").splitlines():
            if not line:
                continue
            counts["lines"] += 1
            request = parse_line(line)
            if request is not None:
                counts["requests"] += 1
                aggregator.add(request)
                continue
            event = parse_event(line)
            if event is None:
                counts["rejected"] += 1
            else:
                counts["events"] += 1
                counts["ring_dropped"] += dropped_count(event[1]) if event[0] == "dropped" else 0
    return counts, windows_of(aggregator)


def windows_of(aggregator: Aggregator) -> list[tuple[object, ...]]:
    return [
        (
            w.second,
            w.backend,
            w.version,
            w.requests,
            tuple(w.status),
            w.failed,
            w.bytes,
            w.tr.count,
            w.ta.count,
        )
        for w in aggregator.flush_all()
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datagrams)
def test_batch_ingest_counts_exactly_what_the_slow_path_counts(datagram_list: list[bytes]) -> None:
    """Any datagrams, valid, mutated or random bytes: ingest never raises, every line is a request,
    an event or a reject (lines = requests + events + rejected), and the counts and windows equal
    those of parsing each line alone with `parse_line`."""
    pipeline = IngestPipeline()
    pipeline.ingest(b"\n".join(datagram_list), len(datagram_list))
    stats = pipeline.counter_stats()
    expected_counts, expected_windows = reference(datagram_list)
    assert stats["lines"] == stats["requests"] + stats["events"] + stats["rejected"]
    assert {key: stats[key] for key in expected_counts} == expected_counts
    assert stats["datagrams"] == len(datagram_list)
    assert windows_of_popped(pipeline) == expected_windows


def windows_of_popped(pipeline: IngestPipeline) -> list[tuple[object, ...]]:
    """The pipeline's windows, fast-path counts included."""
    aggregator = Aggregator()
    aggregator._open = dict(pipeline.pop_all())
    return windows_of(aggregator)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(mutated_line(), st.binary(max_size=60)), min_size=1, max_size=15))
def test_summarize_of_a_file_equals_the_line_by_line_summary(lines: list[bytes]) -> None:
    """`summarize` on a file (fast path through its binary buffer) gives the same result as on the
    same lines read as text one by one (slow path), whatever the lines hold."""
    content = b"\n".join(lines) + b"\n"
    with tempfile.NamedTemporaryFile(suffix=".log", delete=False) as handle:
        handle.write(content)
        path = handle.name
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            fast = summarize(stream)
        with open(path, encoding="utf-8", errors="replace") as stream:
            slow = summarize(list(stream))
    finally:
        os.unlink(path)
    assert fast == slow
    assert fast["lines"] >= fast["requests"] + fast["rejected"]


def test_a_valid_batch_takes_the_fast_path() -> None:
    """Well-formed compact lines are counted by the fast path, not line by line."""
    pipeline = IngestPipeline()
    batch = b"\n".join([VALID_LINES[0], VALID_LINES[1]] * 50)
    pipeline.ingest(batch, 100)
    stats = pipeline.counter_stats()
    assert (stats["requests"], stats["fast_path_requests"], stats["rejected"]) == (100, 100, 0)
