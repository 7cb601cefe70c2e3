"""Ingest: HAProxy's request logs in, per-second per-version windows out.

syslog.UdpCollector  receives datagrams (recvmmsg thread), parses them on a parser thread, flushes windows
syslog.TcpCollector  the same over TCP from a HAProxy ring (RFC 6587 framing, see framing)
pipeline             the hot path shared by both: bounded queue, parser thread, lock-protected aggregator
fastpath             batch parsing by raw fields, proven equal to the slow path (`parse_line`)
haproxy_log          pure parsers (syslog headers, `option httplog`, our compact format), failure rule
aggregate.Aggregator parsed requests → models.Window keyed by (second, backend, version)
accounting           loss accounting: kernel drops, HAProxy DroppedLogs, `reconcile` with HAProxy's counters
process              the collector as a process of its own, started or adopted by `fm up` (outlives it)
summarize            offline, halog-like summary of a log file per backend and server
"""

from fridaymorning.ingest.accounting import (
    HAProxyLossMonitor,
    Mismatch,
    Reconciler,
    reconcile,
)
from fridaymorning.ingest.aggregate import Aggregator, status_class_index
from fridaymorning.ingest.framing import FramingError, SyslogStreamDecoder
from fridaymorning.ingest.haproxy_log import (
    COMPACT_LOG_FORMAT,
    NO_SERVER,
    Request,
    dropped_count,
    is_failure,
    parse_event,
    parse_line,
    parse_message,
    split_syslog,
)
from fridaymorning.ingest.summarize import format_summary_table, summarize
from fridaymorning.ingest.syslog import CollectorStats, Sink, TcpCollector, UdpCollector

__all__ = [
    "COMPACT_LOG_FORMAT",
    "NO_SERVER",
    "Aggregator",
    "CollectorStats",
    "FramingError",
    "HAProxyLossMonitor",
    "Mismatch",
    "Reconciler",
    "Request",
    "Sink",
    "SyslogStreamDecoder",
    "TcpCollector",
    "UdpCollector",
    "dropped_count",
    "format_summary_table",
    "is_failure",
    "parse_event",
    "parse_line",
    "parse_message",
    "reconcile",
    "split_syslog",
    "status_class_index",
    "summarize",
]
