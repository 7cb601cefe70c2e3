"""Data shared between the stages of the loop: ingest → store → analysis → controller → router/platform.

Records on the hot path are slotted dataclasses; nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

# Order of the status-class counters in Window.status.
STATUS_CLASSES: tuple[str, ...] = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")

# Relative accuracy of every latency sketch: quantiles are within 1% of the true value.
SKETCH_RELATIVE_ACCURACY = 0.01

# A version is a token that can be part of an HAProxy server name. '__' is reserved for labels.
VERSION_PATTERN = re.compile(r"^(?!.*__)[A-Za-z0-9][A-Za-z0-9._]{0,50}$")

# Suffix of the label under which a fresh baseline of the stable version runs.
BASELINE_SUFFIX = "__baseline"


def baseline_label(stable_version: str) -> str:
    """The label of a fresh baseline of `stable_version`: 'v1' → 'v1__baseline'."""
    return stable_version + BASELINE_SUFFIX


# The mapping of every latency sketch from a value to its key: key k holds the values in
# (gamma^(k-1), gamma^k]. The judge's latency histograms use these keys as their bins.
SKETCH_MAPPING = LogarithmicMapping(SKETCH_RELATIVE_ACCURACY)


class LatencySketch(DDSketch):
    """A DDSketch whose bins can be read: the judge counts latencies in the sketch's own bins.

    ddsketch has no public way to read a sketch's bins; this subclass is the one place that reads its
    stores, so the judge quantizes each latency once, when the collector adds it.
    """

    def __init__(self, relative_accuracy: float = SKETCH_RELATIVE_ACCURACY) -> None:
        super().__init__(relative_accuracy)

    def key_counts(self) -> tuple[int, list[float]]:
        """The counts of the consecutive keys from the lowest key holding a positive value: (that key,
        counts); (0, []) without positive values. Both keys at the ends hold values."""
        store = self._store
        if not store.count:
            return 0, []
        first = store.min_key - store.offset
        return store.min_key, store.bins[first : store.max_key - store.offset + 1]

    @property
    def below_count(self) -> float:
        """How many values lie below every key: zeros (and values too small for a key) and negatives."""
        return float(self._zero_count + self._negative_store.count)


def new_sketch() -> LatencySketch:
    """A fresh latency sketch with the project's relative accuracy."""
    return LatencySketch()


def server_name(version: str, index: int) -> str:
    """HAProxy server name of instance `index` of `version`: 'v2-1'. The version is recovered from it."""
    return f"{version}-{index}"


def version_of_server(name: str) -> str:
    """The version in an HAProxy server name ('v2-1' → 'v2'); a name without an index is its own version."""
    version, sep, index = name.rpartition("-")
    if sep and index.isdigit() and version:
        return version
    return name


@dataclass(slots=True)
class Window:
    """One second of traffic of one version of one backend, aggregated from HAProxy's request logs.

    `status` counts responses by class in STATUS_CLASSES order. `failed` counts requests that failed
    because of the server or the proxy (see ingest.haproxy_log for the rule). `tr` is the sketch of the
    server response time (Tr, ms) and `ta` of the total active time (Ta, ms).
    """

    backend: str
    version: str
    second: int
    requests: int = 0
    status: list[int] = field(default_factory=lambda: [0] * len(STATUS_CLASSES))
    failed: int = 0
    bytes: int = 0
    tr: LatencySketch = field(default_factory=new_sketch)
    ta: LatencySketch = field(default_factory=new_sketch)

    def merge(self, other: Window) -> None:
        """Add `other`'s counts and sketches into this window."""
        self.requests += other.requests
        for position, count in enumerate(other.status):
            self.status[position] += count
        self.failed += other.failed
        self.bytes += other.bytes
        if other.tr.count:
            self.tr.merge(other.tr)
        if other.ta.count:
            self.ta.merge(other.ta)


@dataclass(frozen=True, slots=True)
class Instance:
    """A running instance of a version, as started by a Platform."""

    version: str
    index: int
    host: str
    port: int
    ref: str  # platform-specific handle: a pid for local://, a task id for swarm://
    # The name the instance is routed and logged under, when not its version: a fresh baseline runs
    # the stable version under the label '<stable>__baseline', so its traffic is counted apart.
    label: str = ""

    @property
    def server(self) -> str:
        """The HAProxy server name of this instance: 'v2-1', or 'v1__baseline-1' for a labelled one."""
        return server_name(self.label or self.version, self.index)


class ServerStatus(StrEnum):
    """Operational status of an HAProxy server, as `show stat` reports it."""

    UP = "UP"
    DOWN = "DOWN"
    MAINT = "MAINT"
    DRAIN = "DRAIN"
    NOLB = "NOLB"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class ServerState:
    """One server of a backend, read from HAProxy's `show stat`."""

    backend: str
    server: str
    status: ServerStatus
    weight: int
    total_requests: int
    current_sessions: int
    address: str = ""
