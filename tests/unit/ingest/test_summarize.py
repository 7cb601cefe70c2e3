"""The offline, halog-like summary of a log file."""

from __future__ import annotations

import io
import json

from rich.console import Console

from fridaymorning.ingest.summarize import format_summary_table, quantiles_of_counts, summarize
from fridaymorning.testing import compact_log_line, httplog_line

HEADER = "Nov 26 12:38:53 lb1 haproxy[6027]: "


def compact(server: str, status: int, tr_ms: int, ta_ms: int, termination: str = "--") -> str:
    return compact_log_line(1795696733.1, server, status, tr_ms, ta_ms, termination=termination, header="")


def httplog(server: str, status: int, tr_ms: int, ta_ms: int, termination: str = "----") -> str:
    timers = f"0/0/0/{tr_ms}/{ta_ms}"
    return httplog_line(target=f"web/{server}", timers=timers, status=status, termination=termination)


def sample_log() -> list[str]:
    lines = [HEADER + compact("v1-1", 200, tr, tr + 1) for tr in range(1, 101)]
    lines += [httplog("v2-1", 503, -1, 3000, "SC--"), "<134>" + HEADER + httplog("v2-1", 200, 7, 8) + "\n"]
    lines += [
        HEADER + "Server web/v2-1 is DOWN, reason: Layer4 connection problem.",
        "not a log line",
        "",
        "  \n",
    ]
    return lines


def test_summary_has_exactly_the_documented_shape() -> None:
    """The result has the documented keys, is JSON-serialisable, and lists servers sorted."""
    summary = summarize(sample_log())
    assert set(summary) == {"lines", "requests", "rejected", "servers"}
    for server in summary["servers"]:
        assert set(server) == {"backend", "server", "requests", "status", "failed", "tr_ms", "ta_ms"}
        assert list(server["status"]) == ["1xx", "2xx", "3xx", "4xx", "5xx", "other"]
        assert list(server["tr_ms"]) == list(server["ta_ms"]) == ["p50", "p90", "p99"]
    assert [(s["backend"], s["server"]) for s in summary["servers"]] == [("web", "v1-1"), ("web", "v2-1")]
    json.dumps(summary)


def test_counts_lines_requests_events_and_rejected() -> None:
    """Events count as lines only, garbage as rejected, blank lines not at all; headers are optional."""
    summary = summarize(sample_log())
    assert (summary["lines"], summary["requests"], summary["rejected"]) == (104, 102, 1)


def test_per_server_status_failures_and_exact_quantiles() -> None:
    """Quantiles are exact (rank floor(q*(n-1))); a -1 timer is left out of that timer only."""
    first, second = summarize(sample_log())["servers"]
    assert first["requests"] == 100
    assert first["status"]["2xx"] == 100
    assert first["failed"] == 0
    assert first["tr_ms"] == {"p50": 50, "p90": 90, "p99": 99}
    assert first["ta_ms"] == {"p50": 51, "p90": 91, "p99": 100}
    assert second["requests"] == 2
    assert (second["status"]["5xx"], second["status"]["2xx"], second["failed"]) == (1, 1, 1)
    assert second["tr_ms"] == {"p50": 7, "p90": 7, "p99": 7}
    assert second["ta_ms"] == {"p50": 8, "p90": 8, "p99": 8}


def test_quantiles_are_null_without_samples() -> None:
    """A server whose timer was never measured has null quantiles for it."""
    summary = summarize([compact("<NOSRV>", 503, -1, -1, "SC")])
    assert summary["servers"][0]["tr_ms"] == {"p50": None, "p90": None, "p99": None}
    assert summary["servers"][0]["ta_ms"] == {"p50": None, "p90": None, "p99": None}


def test_empty_input() -> None:
    """No lines gives zero counts and no servers."""
    assert summarize([]) == {"lines": 0, "requests": 0, "rejected": 0, "servers": []}


def test_quantiles_of_counts_uses_the_lower_rank() -> None:
    """With values 1..4 once each, p50 is the 2nd value (rank floor(0.5*3) = 1)."""
    assert quantiles_of_counts({1: 1, 2: 1, 3: 1, 4: 1}) == {"p50": 2, "p90": 3, "p99": 3}
    assert quantiles_of_counts({5: 99, 500: 1}) == {"p50": 5, "p90": 5, "p99": 5}


def test_table_renders_one_row_per_server() -> None:
    """The rich table shows each server with its counts and timer quantiles."""
    output = io.StringIO()
    Console(file=output, width=200).print(format_summary_table(summarize(sample_log())))
    text = output.getvalue()
    assert "v1-1" in text and "v2-1" in text
    assert "50/90/99" in text
    assert "102 requests in 104 lines, 1 rejected" in text
