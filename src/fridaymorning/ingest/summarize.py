"""Offline summary of an HAProxy log, per backend and server, in the spirit of `halog -srv`.

For `fm logs summarize FILE|-`. Lines may carry a syslog header or not, and may mix our compact format
with `option httplog`. Blank lines are skipped and not counted; HAProxy's own notices (server DOWN,
proxy started...) count as lines but neither as requests nor as rejected.

Quantiles are exact, not sketched: timers are whole milliseconds, so each server keeps a count per
distinct value. A quantile q is the value at rank floor(q * (n - 1)) of the sorted samples, the rank
rule DDSketch uses, so the two agree within the sketch's 1%. Timers of -1 (never measured) are left
out of that timer's quantiles; a quantile with no sample is None (null in JSON).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fridaymorning.ingest.aggregate import status_class_index
from fridaymorning.ingest.haproxy_log import is_failure, parse_event, parse_line
from fridaymorning.models import STATUS_CLASSES

if TYPE_CHECKING:
    from rich.table import Table

QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


class _ServerTally:
    """Running counts of one (backend, server)."""

    __slots__ = ("failed", "requests", "status", "ta_counts", "tr_counts")

    def __init__(self) -> None:
        self.requests = 0
        self.status = [0] * len(STATUS_CLASSES)
        self.failed = 0
        self.tr_counts: dict[int, int] = {}
        self.ta_counts: dict[int, int] = {}


def summarize(lines: Iterable[str]) -> dict[str, Any]:
    """Summarise log lines into a JSON-ready dict::

        {"lines": N, "requests": R, "rejected": J,
         "servers": [{"backend": b, "server": s, "requests": n,
                      "status": {"1xx": .., "2xx": .., "3xx": .., "4xx": .., "5xx": .., "other": ..},
                      "failed": f,
                      "tr_ms": {"p50": .., "p90": .., "p99": ..},
                      "ta_ms": {"p50": .., "p90": .., "p99": ..}}]}

    Servers are sorted by backend, then server. Never raises on malformed lines: they are `rejected`.
    """
    tallies: dict[tuple[str, str], _ServerTally] = {}
    line_count = request_count = rejected_count = 0
    for raw_line in lines:
        line = raw_line.rstrip("\r\n")
        if not line.strip():
            continue
        line_count += 1
        request = parse_line(line)
        if request is None:
            if parse_event(line) is None:
                rejected_count += 1
            continue
        request_count += 1
        _, backend, server, status, tr_ms, ta_ms, _, termination = request
        tally = tallies.get((backend, server))
        if tally is None:
            tally = tallies[(backend, server)] = _ServerTally()
        _count_request(tally, status, tr_ms, ta_ms, termination)
    return {
        "lines": line_count,
        "requests": request_count,
        "rejected": rejected_count,
        "servers": [_server_summary(key, tallies[key]) for key in sorted(tallies)],
    }


def _count_request(tally: _ServerTally, status: int, tr_ms: int, ta_ms: int, termination: str) -> None:
    """Add one request to its server's tally."""
    tally.requests += 1
    tally.status[status_class_index(status)] += 1
    if is_failure(status, termination):
        tally.failed += 1
    if tr_ms >= 0:
        tally.tr_counts[tr_ms] = tally.tr_counts.get(tr_ms, 0) + 1
    if ta_ms >= 0:
        tally.ta_counts[ta_ms] = tally.ta_counts.get(ta_ms, 0) + 1


def _server_summary(key: tuple[str, str], tally: _ServerTally) -> dict[str, Any]:
    """The JSON entry of one server."""
    backend, server = key
    return {
        "backend": backend,
        "server": server,
        "requests": tally.requests,
        "status": dict(zip(STATUS_CLASSES, tally.status, strict=True)),
        "failed": tally.failed,
        "tr_ms": quantiles_of_counts(tally.tr_counts),
        "ta_ms": quantiles_of_counts(tally.ta_counts),
    }


def quantiles_of_counts(counts: dict[int, int]) -> dict[str, int | None]:
    """p50/p90/p99 of samples given as value → count: the value at rank floor(q * (n - 1))."""
    total = sum(counts.values())
    if total == 0:
        return {name: None for name, _ in QUANTILES}
    values = sorted(counts)
    result: dict[str, int | None] = {}
    for name, quantile in QUANTILES:
        rank = int(quantile * (total - 1))
        seen = 0
        for value in values:
            seen += counts[value]
            if seen > rank:
                result[name] = value
                break
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
