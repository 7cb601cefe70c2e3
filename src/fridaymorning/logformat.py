"""The request log format fridaymorning asks HAProxy for, shared by the writer and the reader.

The HAProxy router renders `COMPACT_LOG_FORMAT` into haproxy.cfg; the collector's parser
(ingest.haproxy_log) reads the lines it produces. Both depend on this module, not on each other.
"""

from __future__ import annotations

COMPACT_LOG_FORMAT = "fm1 %Ts.%ms %b %s %ST %Tr %Ta %B %ts %ci"
COMPACT_TAG = "fm1"  # first word of every compact message: names the format and its version
