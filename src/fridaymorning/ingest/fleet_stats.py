"""Loss accounting per instance of a HAProxy fleet.

Every instance logs to the one collector, each line tagged with the instance's name in its syslog
header (`log-send-hostname NAME`; a managed instance that sends no name is known by its lines
without one). The collector counts logged requests per (instance, backend, server), so each
instance is reconciled on its own: its own `show stat` counters against the lines that carry its
name, and its own `DroppedLogs`. A loss is thus attributed to the instance that lost the lines, and
an instance that does not answer is skipped alone (an error of its own reconciler) while the others
are still reconciled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fridaymorning.ingest.accounting import HAProxyLossMonitor, HAProxyStats, Reconciler
from fridaymorning.ingest.aggregate import ServerKey

# Counters of `Reconciler.stats()` that add up over instances into the fleet's.
SUMMED_RECONCILIATION = (
    "reconciliations",
    "mismatched_intervals",
    "missing_lines",
    "surplus_lines",
    "counter_resets",
    "lost_across_restart",
    "restart_checks",
    "errors",
)


class LoggedByInstance(Protocol):
    """What an instance's reconciler needs of the collector."""

    def logged_between(
        self, first_second: int, end_second: int, instance: str | None = None
    ) -> dict[ServerKey, int]: ...


@dataclass(frozen=True, slots=True)
class FleetMember:
    """An instance to account for: its name, the host name its log lines carry, its admin API."""

    name: str
    log_host: str
    router: HAProxyStats


def log_hosts(names: Iterable[tuple[str, bool]]) -> dict[str, str]:
    """The host name each instance's lines carry: its own name, but '' (none) for a managed instance,
    which fridaymorning starts without `log-send-hostname`. `names` are (name, managed) pairs."""
    return {name: "" if managed else name for name, managed in names}


class InstanceLog:
    """The requests one instance logged: the `LoggedCounts` its reconciler compares with its counters."""

    def __init__(self, collector: LoggedByInstance, log_host: str) -> None:
        self._collector = collector
        self._log_host = log_host

    def logged_between(self, first_second: int, end_second: int) -> dict[ServerKey, int]:
        return self._collector.logged_between(first_second, end_second, self._log_host)


@dataclass(slots=True)
class InstanceAccounting:
    """One instance's DroppedLogs monitor and reconciler."""

    member: FleetMember
    monitor: HAProxyLossMonitor
    reconciler: Reconciler

    def stats(self, logged_by_host: Mapping[str, int]) -> dict[str, Any]:
        return {
            "log_host": self.member.log_host,
            "requests": logged_by_host.get(self.member.log_host, 0),
            "haproxy_dropped_logs": self.monitor.dropped_logs,
            "dropped_logs_errors": self.monitor.errors,
            "reconciliation": self.reconciler.stats(),
        }


def fleet_totals(
    instances: Mapping[str, Mapping[str, Any]], logged_by_host: Mapping[str, int]
) -> dict[str, Any]:
    """The collector's HAProxy loss keys for a fleet: sums over the instances' (see
    `InstanceAccounting.stats`), the instances themselves, and the requests whose lines named no
    instance of the fleet (`unattributed_requests`: a host name the fleet does not know)."""
    reconciliations = [dict(each["reconciliation"]) for each in instances.values()]
    summed: dict[str, Any] = {
        key: sum(int(each.get(key) or 0) for each in reconciliations) for key in SUMMED_RECONCILIATION
    }
    maxima = [each.get("lost_across_restart_max") for each in reconciliations]
    summed["lost_across_restart_max"] = None if None in maxima else sum(int(value or 0) for value in maxima)
    summed["last"] = None  # each instance has its own: see "instances"
    dropped = [each.get("haproxy_dropped_logs") for each in instances.values()]
    known = [int(value) for value in dropped if value is not None]
    hosts = {each.get("log_host") for each in instances.values()}
    return {
        "haproxy_dropped_logs": sum(known) if known else None,
        "lost_across_restart": summed["lost_across_restart"],
        "reconciliation": summed,
        "instances": {name: dict(each) for name, each in instances.items()},
        "unattributed_requests": sum(count for host, count in logged_by_host.items() if host not in hosts),
    }
