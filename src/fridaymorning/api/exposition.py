"""Prometheus exposition at `GET /metrics`, on the API's listener.

One `prometheus_client` collector reads the running `fm up` at each scrape. Its registry belongs to
the app, never the process-wide default one, so several runtimes in one process never mix. Three
kinds of metrics, kept apart:

* traffic per service, backend and version: requests, failures and a latency histogram, added up
  from the metric store's closed seconds since the API started (`TrafficTotals`);
* the controller, under the names Flagger exports (`canary_status`, `canary_weight`, `canary_total`,
  `canary_duration_seconds`) and fridaymorning's own (`fm_rollout_*`, `fm_verdict_phase`, `fm_check_*`);
* the log path's losses as the collector process counts them (`fm_collector_*`), and the metric
  store's write buffer when the store has one (`fm_store_buffer_*`, see `buffer_stats`).
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fridaymorning import __version__
from fridaymorning.controller.loop import ServiceController
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.controller.planner import judged_series
from fridaymorning.controller.state import StateStore
from fridaymorning.errors import FridayMorningError
from fridaymorning.models import Window
from fridaymorning.sketches import cumulative_counts, merge_sketches
from fridaymorning.store.base import MetricStore

# Upper bounds of the latency histogram's buckets, in seconds: Prometheus' default buckets, with
# 1 ms and 2.5 ms below them, since HAProxy times whole milliseconds.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LATENCY_BUCKETS_MS = tuple(bound * 1000 for bound in LATENCY_BUCKETS_S)
# Upper bounds of canary_duration_seconds: a rollout lasts minutes to hours.
ROLLOUT_DURATION_BUCKETS_S = (30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
# The most finished rollouts of a service that canary_duration_seconds counts.
MAX_ROLLOUTS_COUNTED = 10_000
# A series that is no longer the stable, canary or baseline version, and served no request for this
# long, is no longer read from the store nor exported.
IDLE_SERIES_S = 3600

# Flagger's canary_status: 0 running, 1 succeeded (and any state that is neither), 2 failed.
FLAGGER_RUNNING, FLAGGER_SUCCEEDED, FLAGGER_FAILED = 0, 1, 2
FAILED_PHASES = frozenset(
    {RolloutPhase.ROLLING_BACK, RolloutPhase.ROLLED_BACK, RolloutPhase.ABORTING, RolloutPhase.ABORTED}
)

# The collector's counters (what `fm status` prints, and the other ways a line is lost), as
# fm_collector_<key>_total; each counts since the collector process started.
COLLECTOR_COUNTERS = {
    "lines": "Log lines received",
    "requests": "Requests parsed from the log lines",
    "rejected": "Log lines that could not be parsed",
    "late_requests": "Requests whose second was already written, counted in the oldest open second",
    "socket_drops": "Datagrams the kernel dropped for the collector's socket",
    "udp_rcvbuf_errors": "Growth of the host's UDP RcvbufErrors (every UDP socket of the host)",
    "haproxy_dropped_logs": "Log lines HAProxy could not send (DroppedLogs)",
    "ring_dropped": "Log lines a HAProxy ring overwrote before they were sent",
    "lost_across_restart": "Log lines lost while no collector process ran",
    "receive_errors": "Errors receiving from the collector's socket",
    "sink_errors": "Failed writes of windows to the metric store",
    "windows_dropped": "Windows dropped after failed writes",
}
# The reconciliation's counters, as fm_collector_reconciliation_<key>_total.
RECONCILIATION_COUNTERS = {
    "reconciliations": "Reconciliations of the logged requests with HAProxy's counters",
    "mismatched_intervals": "Reconciled intervals whose logged requests differ from HAProxy's counters",
    "missing_lines": "Requests HAProxy counted that no log line reported",
    "surplus_lines": "Log lines beyond the requests HAProxy counted",
}

# Per instance of a fleet, as fm_collector_instance_<key>_total{haproxy}.
INSTANCE_COUNTERS = {
    "requests": "Requests logged by the instance (its lines' syslog host name)",
    "haproxy_dropped_logs": "Log lines the instance could not send (its DroppedLogs)",
    **RECONCILIATION_COUNTERS,
    "errors": "Reconciliations skipped because the instance's counters could not be read",
}

# Every kind of event a rollout records, exported at 0 before the first one, so that the first event
# of a kind is an increase Prometheus sees (a series that appears at 1 shows no increase).
EVENT_KINDS = frozenset({"started", "step", "resumed", "verdict", *(phase.value for phase in RolloutPhase)})

# (service, backend, version)
SeriesKey = tuple[str, str, str]


def flagger_status(phase: RolloutPhase | None) -> int:
    """Flagger's numeric canary status of a rollout phase (None: no rollout yet)."""
    if phase is RolloutPhase.PROGRESSING:
        return FLAGGER_RUNNING
    if phase in FAILED_PHASES:
        return FLAGGER_FAILED
    return FLAGGER_SUCCEEDED


@dataclass(slots=True)
class Traffic:
    """One version's traffic since the API started: counters, and cumulative latency buckets."""

    requests: int = 0
    failed: int = 0
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(LATENCY_BUCKETS_S))
    latency_count: float = 0.0
    latency_sum_s: float = 0.0
    last_request_second: int = 0

    def add(self, windows: list[Window]) -> None:
        """Count the windows' requests, and their response times (Tr) into the buckets."""
        self.requests += sum(window.requests for window in windows)
        self.failed += sum(window.failed for window in windows)
        served = [window.second for window in windows if window.requests]
        if served:
            self.last_request_second = max(self.last_request_second, *served)
        latency = merge_sketches(window.tr for window in windows)
        if latency.count:
            counts = cumulative_counts(latency, _LATENCY_BUCKETS_MS)
            self.buckets = [total + count for total, count in zip(self.buckets, counts, strict=True)]
            self.latency_count += latency.count
            self.latency_sum_s += latency.sum / 1000


class TrafficTotals:
    """Per-version traffic added up from the store's closed seconds; each second is read once."""

    def __init__(self, store: MetricStore, origin: int) -> None:
        self.store = store
        self.origin = origin  # the first second counted
        self.series: dict[SeriesKey, Traffic] = {}
        self._next: dict[SeriesKey, int] = {}
        self._lock = threading.Lock()  # two scrapes at once must not read a second twice

    def refresh(self, wanted: Iterable[SeriesKey], end: int) -> bool:
        """Add the seconds before `end` not read yet; False when the store failed (totals stay)."""
        wanted = set(wanted)
        answered = True
        with self._lock:
            for key in sorted(wanted | set(self.series)):
                start = self._next.get(key, self.origin)
                if start >= end:
                    continue
                try:
                    windows = self.store.query(key[1], key[2], start, end)
                except FridayMorningError:
                    answered = False
                    continue
                self.series.setdefault(key, Traffic(last_request_second=start)).add(windows)
                self._next[key] = end
            idle = [
                key
                for key, traffic in self.series.items()
                if key not in wanted and traffic.last_request_second < end - IDLE_SERIES_S
            ]
            for key in idle:
                del self.series[key], self._next[key]
        return answered

    def families(self) -> Iterator[Metric]:
        labels = ["service", "backend", "version"]
        requests = CounterMetricFamily(
            "fm_requests", "Requests HAProxy logged, per version, since fm up started", labels=labels
        )
        failures = CounterMetricFamily(
            "fm_request_failures",
            "Requests that failed because of the server or the proxy, since fm up started",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            "fm_response_time_seconds",
            "Server response time (HAProxy's Tr), from the per-second latency sketches",
            labels=labels,
        )
        with self._lock:
            for key, traffic in sorted(self.series.items()):
                requests.add_metric(list(key), traffic.requests)
                failures.add_metric(list(key), traffic.failed)
                buckets = [
                    (f"{bound:g}", count)
                    for bound, count in zip(LATENCY_BUCKETS_S, traffic.buckets, strict=True)
                ]
                latency.add_metric(
                    list(key), [*buckets, ("+Inf", traffic.latency_count)], traffic.latency_sum_s
                )
        yield from (requests, failures, latency)


def wanted_series(controller: ServiceController) -> list[SeriesKey]:
    """The series of a service worth reading now: its stable version, and a rollout's canary and baseline."""
    name = controller.service.name
    keys = [(name, controller.backend, controller.stable_version)]
    active = controller.states.active_rollout(name)
    if active is not None:
        series = judged_series(controller.service, active)
        keys.append((name, series.canary_backend, active.version))
        keys.append((name, series.baseline_backend, series.baseline_version))
    return keys


def stateset(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    """A gauge that is 1 for the current state and 0 for the others (a state label)."""
    return GaugeMetricFamily(name, documentation, labels=labels)


@dataclass(frozen=True, slots=True)
class RolloutFamilies:
    """The controller's metrics of every service, filled one service at a time."""

    status: GaugeMetricFamily = field(
        default_factory=lambda: GaugeMetricFamily(
            "canary_status", "Flagger's status: 0 running, 1 succeeded, 2 failed", labels=["name"]
        )
    )
    weight: GaugeMetricFamily = field(
        default_factory=lambda: GaugeMetricFamily(
            "canary_weight",
            "Percent of the traffic as set: the canary's, and the primary's",
            labels=["name", "workload"],
        )
    )
    duration: HistogramMetricFamily = field(
        default_factory=lambda: HistogramMetricFamily(
            "canary_duration_seconds", "Duration of each finished rollout, start to end", labels=["name"]
        )
    )
    phase: GaugeMetricFamily = field(
        default_factory=lambda: stateset(
            "fm_rollout_phase", "The phase of the service's latest rollout", ["service", "phase"]
        )
    )
    step: GaugeMetricFamily = field(
        default_factory=lambda: GaugeMetricFamily(
            "fm_rollout_step", "The latest rollout's step, from 1", labels=["service"]
        )
    )
    rollout_id: GaugeMetricFamily = field(
        default_factory=lambda: GaugeMetricFamily(
            "fm_rollout_id", "The id of the service's latest rollout", labels=["service"]
        )
    )

    def add(self, name: str, rollouts: list[RolloutState]) -> None:
        """One service's metrics, from its rollouts, newest first."""
        latest = rollouts[0] if rollouts else None
        self.status.add_metric([name], flagger_status(latest.phase if latest else None))
        canary_weight = latest.canary_weight if latest is not None and latest.active else 0
        self.weight.add_metric([name, name], canary_weight)
        self.weight.add_metric([name, f"{name}-primary"], 100 - canary_weight)
        buckets, seconds = duration_buckets(rollouts)
        self.duration.add_metric([name], buckets, seconds)
        if latest is not None:
            for each in RolloutPhase:
                self.phase.add_metric([name, each.value], 1 if each is latest.phase else 0)
            self.step.add_metric([name], latest.step_index + 1)
            self.rollout_id.add_metric([name], latest.id)

    def all(self) -> tuple[Metric, ...]:
        return (self.status, self.weight, self.duration, self.phase, self.step, self.rollout_id)


def rollout_families(controllers: list[ServiceController], states: StateStore) -> Iterator[Metric]:
    """Flagger's canary metrics, and the rollouts' phase, step and events."""
    total = GaugeMetricFamily("canary_total", "Services under canary control")
    total.add_metric([], len(controllers))
    families = RolloutFamilies()
    for controller in controllers:
        families.add(controller.service.name, states.rollouts(controller.service.name, MAX_ROLLOUTS_COUNTED))
    yield from (total, *families.all())
    yield event_family([controller.service.name for controller in controllers], states.event_counts())


def event_family(services: list[str], counts: Mapping[tuple[str, str], int]) -> Metric:
    """fm_rollout_events_total, every known kind from 0 on, for every service."""
    events = CounterMetricFamily(
        "fm_rollout_events", "Events the services' rollouts recorded, by kind", labels=["service", "kind"]
    )
    for service in sorted(set(services) | {service for service, _ in counts}):
        for kind in sorted(EVENT_KINDS | {kind for name, kind in counts if name == service}):
            events.add_metric([service, kind], counts.get((service, kind), 0))
    return events


def duration_buckets(rollouts: list[RolloutState]) -> tuple[list[tuple[str, float]], float]:
    """The cumulative buckets (count last, as +Inf) and the sum of the finished rollouts' durations."""
    durations = [r.finished_at - r.started_at for r in rollouts if r.finished_at is not None]
    buckets = [
        (f"{bound:g}", float(sum(d <= bound for d in durations))) for bound in ROLLOUT_DURATION_BUCKETS_S
    ]
    return [*buckets, ("+Inf", float(len(durations)))], float(sum(durations))


CHECK_GAUGES = {
    "statistic": ("fm_check_statistic", "The statistic a check of the latest verdict measured"),
    "bound": ("fm_check_bound", "The confidence bound that decides a pass"),
    "threshold": ("fm_check_threshold", "The threshold the bound is compared with"),
    "evalue": ("fm_check_evalue", "The e-value of the sequential test that decides a fail"),
    "evalue_threshold": ("fm_check_evalue_threshold", "The e-value at which the check fails"),
    "n": ("fm_check_samples", "The canary count the check rests on"),
}
VERDICT_PHASES = ("pass", "fail", "hold", "error")


def verdict_families(snapshots: list[Mapping[str, Any]]) -> Iterator[Metric]:
    """The latest verdict of each running rollout: its phase, and each check's numbers."""
    verdict_phase = stateset(
        "fm_verdict_phase", "The latest verdict of the running rollout", ["service", "phase"]
    )
    check_phase = stateset(
        "fm_check_phase", "Each check's phase in the latest verdict", ["service", "check", "phase"]
    )
    gauges = {
        key: GaugeMetricFamily(name, help_text, labels=["service", "check"])
        for key, (name, help_text) in CHECK_GAUGES.items()
    }
    for snapshot in snapshots:
        verdict = snapshot.get("verdict")
        if not verdict:
            continue
        service = str(snapshot["service"])
        for each in VERDICT_PHASES:
            verdict_phase.add_metric([service, each], 1 if verdict.get("phase") == each else 0)
        seen: set[str] = set()
        for check in verdict.get("checks", []):
            name = str(check.get("name"))
            if name in seen:  # one sample per series: a repeated name keeps its first check
                continue
            seen.add(name)
            for each in VERDICT_PHASES:
                check_phase.add_metric([service, name, each], 1 if check.get("phase") == each else 0)
            for key, gauge in gauges.items():
                value = check.get(key)
                if isinstance(value, int | float) and not math.isnan(value):
                    gauge.add_metric([service, name], float(value))
    yield from (verdict_phase, check_phase, *gauges.values())


def collector_families(stats: Mapping[str, Any]) -> Iterator[Metric]:
    """The collector process's counters: what it received, and every way a line was lost."""
    up = GaugeMetricFamily("fm_collector_up", "1 while the collector process runs")
    up.add_metric([], 1 if stats.get("process_running") else 0)
    yield up
    restarts = stats.get("process_restarts")
    if isinstance(restarts, int):
        yield CounterMetricFamily(
            "fm_collector_process_restarts", "Restarts of the collector process", restarts
        )
    yield from counters("fm_collector_", COLLECTOR_COUNTERS, stats)
    yield from counters(
        "fm_collector_reconciliation_", RECONCILIATION_COUNTERS, stats.get("reconciliation") or {}
    )
    yield from instance_families(stats.get("instances") or {})


def instance_families(instances: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    """Each fleet instance's loss accounting, fm_collector_instance_<key>_total{haproxy="NAME"}
    (the totals above are their sums). The label is `haproxy`, not `instance`: Prometheus sets
    `instance` to the scraped target and would rename ours."""
    if not instances:
        return
    families = {
        key: CounterMetricFamily(f"fm_collector_instance_{key}", help_text, labels=["haproxy"])
        for key, help_text in INSTANCE_COUNTERS.items()
    }
    for name, instance in sorted(instances.items()):
        values = {**(instance.get("reconciliation") or {}), **instance}
        for key, family in families.items():
            value = values.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                family.add_metric([name], value)
    yield from families.values()


def counters(prefix: str, documented: Mapping[str, str], stats: Mapping[str, Any]) -> Iterator[Metric]:
    for key, help_text in documented.items():
        value = stats.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            yield CounterMetricFamily(prefix + key, help_text, value)


_METRIC_NAME_PART = re.compile(r"[^a-zA-Z0-9_]")


def buffer_stats(store: object) -> Mapping[str, Any] | None:
    """The store's write-buffer counters, if it has a buffer: `store.buffer_stats()`, else None."""
    read = getattr(store, "buffer_stats", None)
    return dict(read()) if callable(read) else None


def store_buffer_families(buffers: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    """fm_store_buffer_<key>{writer} for each numeric entry of each writer's `buffer_stats()`."""
    families: dict[str, GaugeMetricFamily] = {}
    for writer, stats in sorted(buffers.items()):
        for key, value in sorted(stats.items()):
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            name = "fm_store_buffer_" + _METRIC_NAME_PART.sub("_", key)
            family = families.setdefault(
                name, GaugeMetricFamily(name, f"The metric store's write buffer: {key}", labels=["writer"])
            )
            family.add_metric([writer], float(value))
    yield from families.values()


class RuntimeCollector(Collector):
    """Everything /metrics shows, read from the running `fm up` at each scrape."""

    def __init__(self, runtime: Any, clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.clock = clock
        self.origin = math.floor(clock())
        self.traffic: TrafficTotals | None = None

    def collect(self) -> Iterator[Metric]:
        controllers: list[ServiceController] = list(self.runtime.controllers.values())
        status = self.runtime.status()
        info = GaugeMetricFamily("fm_info", "The fridaymorning version serving /metrics", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self.traffic_families(controllers)
        yield from rollout_families(controllers, self.runtime.states)
        yield from verdict_families(status.get("services", []))
        collector = status.get("collector") or {}
        yield from collector_families(collector)
        buffers = {"fm_up": buffer_stats(self.runtime.metrics), "collector": collector.get("store_buffer")}
        yield from store_buffer_families({writer: stats for writer, stats in buffers.items() if stats})

    def traffic_families(self, controllers: list[ServiceController]) -> Iterator[Metric]:
        store = self.runtime.metrics
        if store is None:
            return
        if self.traffic is None or self.traffic.store is not store:
            self.traffic = TrafficTotals(store, self.origin)
        # Only closed seconds: the collector writes a second `data_lag_s` after it ends.
        lag = max((controller.data_lag_s for controller in controllers), default=0.0)
        end = math.floor(self.clock() - lag)
        answered = self.traffic.refresh([key for c in controllers for key in wanted_series(c)], end)
        up = GaugeMetricFamily("fm_metric_store_up", "1 when the metric store answered this scrape's reads")
        up.add_metric([], 1 if answered else 0)
        yield up
        yield from self.traffic.families()


class Exposition:
    """The app's own registry, holding one RuntimeCollector."""

    def __init__(self, runtime: Any, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = RuntimeCollector(runtime, clock)
        self.registry.register(self.collector)

    def render(self) -> bytes:
        """The text exposition format; it reads the stores, so call it off the event loop."""
        return generate_latest(self.registry)


router = APIRouter()


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus' text exposition format", "content": {"text/plain": {}}}},
)
async def prometheus_metrics(request: Request) -> Response:
    """Every metric of this `fm up`, for Prometheus to scrape."""
    exposition: Exposition = request.app.state.exposition
    body = await asyncio.to_thread(exposition.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
