"""Ingest: HAProxy's request logs in, per-second per-version windows out.

syslog.UdpCollector  receives datagrams, parses and aggregates them inline, flushes windows to a sink
haproxy_log          pure parsers (syslog headers, `option httplog`, our compact format), failure rule
aggregate.Aggregator parsed requests → models.Window keyed by (second, backend, version)
summarize            offline, halog-like summary of a log file per backend and server
"""

from fridaymorning.ingest.aggregate import Aggregator, status_class_index
from fridaymorning.ingest.haproxy_log import (
    COMPACT_LOG_FORMAT,
    NO_SERVER,
    Request,
    is_failure,
    parse_event,
    parse_line,
    parse_message,
    split_syslog,
)
from fridaymorning.ingest.summarize import format_summary_table, summarize
from fridaymorning.ingest.syslog import CollectorStats, Sink, UdpCollector

__all__ = [
    "COMPACT_LOG_FORMAT",
    "NO_SERVER",
    "Aggregator",
    "CollectorStats",
    "Request",
    "Sink",
    "UdpCollector",
    "format_summary_table",
    "is_failure",
    "parse_event",
    "parse_line",
    "parse_message",
    "split_syslog",
    "status_class_index",
    "summarize",
]
