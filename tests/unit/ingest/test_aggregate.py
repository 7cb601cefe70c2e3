"""The aggregator: parsed requests → per-second, per-version windows."""

from __future__ import annotations

import pytest

from fridaymorning.ingest.aggregate import Aggregator, status_class_index
from fridaymorning.ingest.haproxy_log import NO_SERVER, Request
from fridaymorning.models import STATUS_CLASSES, Window

T = 1_800_000_000


def request(
    second: int = T,
    server: str = "v1-1",
    status: int = 200,
    tr_ms: int = 10,
    ta_ms: int = 12,
    sent_bytes: int = 100,
    termination: str = "--",
    backend: str = "web",
) -> Request:
    return (second, backend, server, status, tr_ms, ta_ms, sent_bytes, termination)


def by_key(windows: list[Window]) -> dict[tuple[int, str, str], Window]:
    return {(window.second, window.backend, window.version): window for window in windows}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (100, "1xx"),
        (204, "2xx"),
        (302, "3xx"),
        (499, "4xx"),
        (503, "5xx"),
        (-1, "other"),
        (0, "other"),
        (99, "other"),
        (600, "other"),
    ],
)
def test_status_classes(status: int, expected: str) -> None:
    """Statuses map to STATUS_CLASSES; -1 (no response) and out-of-range codes are 'other'."""
    assert STATUS_CLASSES[status_class_index(status)] == expected


def test_servers_of_one_version_share_a_window() -> None:
    """'v2-1' and 'v2-2' are both version 'v2'; 'v1-1' is version 'v1'; each second is its own window."""
    aggregator = Aggregator()
    for server in ("v1-1", "v2-1", "v2-2", "v2-2"):
        aggregator.add(request(server=server))
    aggregator.add(request(second=T + 1, server="v2-1"))
    windows = by_key(aggregator.flush_all())
    assert {key: window.requests for key, window in windows.items()} == {
        (T, "web", "v1"): 1,
        (T, "web", "v2"): 3,
        (T + 1, "web", "v2"): 1,
    }


def test_backends_are_kept_apart() -> None:
    """The same version on two backends gives two windows."""
    aggregator = Aggregator()
    aggregator.add(request(backend="web"))
    aggregator.add(request(backend="api"))
    assert sorted(window.backend for window in aggregator.flush_all()) == ["api", "web"]


def test_counts_status_failures_bytes_and_sketches() -> None:
    """A window counts requests, status classes, failures by the failure rule, bytes, and Tr/Ta sketches."""
    aggregator = Aggregator()
    aggregator.add(request(status=200, tr_ms=10, ta_ms=20, sent_bytes=100))
    aggregator.add(request(status=404, tr_ms=30, ta_ms=40, sent_bytes=50))
    aggregator.add(request(status=503, tr_ms=-1, ta_ms=3000, sent_bytes=200, termination="SC"))
    aggregator.add(request(status=-1, tr_ms=5, ta_ms=-1, sent_bytes=0, termination="CD"))
    aggregator.add(request(status=200, tr_ms=0, ta_ms=0, sent_bytes=7, termination="SD"))
    [window] = aggregator.flush_all()
    assert window.requests == 5
    assert dict(zip(STATUS_CLASSES, window.status, strict=True)) == {
        "1xx": 0,
        "2xx": 2,
        "3xx": 0,
        "4xx": 1,
        "5xx": 1,
        "other": 1,
    }
    assert window.failed == 2  # the 503 SC and the 200 SD; the client abort CD is not a failure
    assert window.bytes == 357
    assert window.tr.count == 4  # the -1 of the refused connection is not a latency
    assert window.ta.count == 4
    assert window.tr.get_quantile_value(1.0) == pytest.approx(30, rel=0.01)
    assert window.ta.get_quantile_value(1.0) == pytest.approx(3000, rel=0.01)
    assert window.tr.sum == 45
    assert (window.tr._min, window.tr._max) == (0, 30)


def test_sketch_equals_one_built_request_by_request() -> None:
    """Counting timers per value and sketching at flush gives the same sketch as adding one by one."""
    from fridaymorning.models import new_sketch

    values = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 144, 144, 1000, 0]
    aggregator = Aggregator()
    reference = new_sketch()
    for value in values:
        aggregator.add(request(tr_ms=value))
        reference.add(value)
    [window] = aggregator.flush_all()
    quantiles = [0.0, 0.1, 0.5, 0.9, 0.99, 1.0]
    assert [window.tr.get_quantile_value(q) for q in quantiles] == [
        reference.get_quantile_value(q) for q in quantiles
    ]
    assert (window.tr.count, window.tr.sum) == (reference.count, reference.sum)


def test_nosrv_requests_have_their_own_version() -> None:
    """Requests that reached no server are kept under version '<NOSRV>', never under a real version."""
    aggregator = Aggregator()
    aggregator.add(request(server=NO_SERVER, status=503, tr_ms=-1, termination="SC"))
    aggregator.add(request(server="v1-1"))
    assert sorted(window.version for window in aggregator.flush_all()) == ["<NOSRV>", "v1"]


def test_flush_returns_only_seconds_older_than_the_lateness() -> None:
    """flush(now, lateness) returns and forgets windows with second < now - lateness, oldest first."""
    aggregator = Aggregator()
    for second in (T, T + 1, T + 2, T + 3):
        aggregator.add(request(second=second))
    assert [window.second for window in aggregator.flush(T + 3, 1.0)] == [T, T + 1]
    assert aggregator.flush(T + 3, 1.0) == []
    assert aggregator.open_windows == 2
    assert [window.second for window in aggregator.flush_all()] == [T + 2, T + 3]
    assert aggregator.open_windows == 0


def test_late_requests_count_in_the_oldest_open_second() -> None:
    """A request for a flushed second is not lost: it is counted late, in the oldest second still open,
    so a second once written never changes (the judge and `fm replay` see the same seconds)."""
    aggregator = Aggregator()
    aggregator.add(request(second=T))
    assert len(aggregator.flush(T + 5, 1.0)) == 1  # seconds before T + 4 are written
    aggregator.add(request(second=T, status=500))
    aggregator.add(request(second=T + 4))
    assert aggregator.late_requests == 1
    [window] = aggregator.flush(T + 6, 1.0)
    assert (window.second, window.requests, window.failed) == (T + 4, 2, 1)
    assert aggregator.logged_between(T, T + 1) == {("web", "v1-1"): 2}  # by accept second
