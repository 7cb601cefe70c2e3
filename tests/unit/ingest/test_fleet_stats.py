"""Loss accounting per instance of a fleet: the host name of each line, the requests counted per
instance, and each instance reconciled against its own counters."""

from __future__ import annotations

import time

import pytest

from fridaymorning.api.exposition import instance_families
from fridaymorning.cli import instance_lines
from fridaymorning.errors import RouterError
from fridaymorning.ingest.accounting import Mismatch, Reconciler
from fridaymorning.ingest.fleet_stats import InstanceLog, fleet_totals, log_hosts
from fridaymorning.ingest.haproxy_log import syslog_host
from fridaymorning.ingest.pipeline import IngestPipeline
from fridaymorning.testing import FakeClock, FakeHAProxyCounters

SECOND = 1795696730
COMPACT = f"fm1 {SECOND}.450 web v1-1 200 3 5 217 -- 10.0.0.1"


@pytest.mark.parametrize(
    ("line", "host"),
    [
        (f"<134>Nov 26 12:18:15 lb1 haproxy[6027]: {COMPACT}", "lb1"),
        (f"<134>Nov 26 12:18:15 haproxy[6027]: {COMPACT}", ""),
        (f"<134>Nov  6 12:18:15 edge-2.example haproxy[1]: {COMPACT}", "edge-2.example"),
        (f"Nov 26 12:18:15 lb3 haproxy[6027]: {COMPACT}", "lb3"),
        (f"<134>2026-11-26T12:18:15+00:00 lb2 haproxy[6027]: {COMPACT}", "lb2"),
        (f"<134>1 2026-11-26T12:18:15.123456+00:00 lb2 haproxy 6027 - - {COMPACT}", "lb2"),
        (f"<134>1 2026-11-26T12:18:15.123456+00:00 - haproxy 6027 - - {COMPACT}", ""),
        (COMPACT, ""),
        ("<134>Nov 26 12:18:15 no tag at all", ""),
        ("<13", ""),
        ("", ""),
    ],
)
def test_the_host_name_of_a_syslog_header(line: str, host: str) -> None:
    """RFC 3164 (with or without a host, a PRI, an ISO stamp), RFC 5424 ('-' is none), or no header."""
    assert syslog_host(line) == host


def header(host: str) -> str:
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime(SECOND))
    return f"<134>{stamp} {host + ' ' if host else ''}haproxy[6027]: "


def httplog(server: str) -> str:
    date = time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(SECOND))
    return (
        f"10.0.0.1:41062 [{date}.474] fe web/{server} 0/0/0/3/5 200 217 - - ---- 1/1/0/0/0 0/0 "
        '"GET / HTTP/1.1"'
    )


def test_requests_are_counted_per_instance_by_the_fast_and_the_slow_path() -> None:
    """Compact lines (fast path) and httplog lines (slow path) of lb1, lb2 and a HAProxy that sends no
    host name: each instance's count is its own, and all of them together are today's count."""
    pipeline = IngestPipeline()
    lines = (
        [header("lb1") + COMPACT] * 3
        + [header("lb2") + COMPACT.replace("v1-1", "v2-1")] * 2
        + [header("") + COMPACT]
        + [header("lb2") + httplog("v1-1")] * 4
    )
    pipeline.ingest("\n".join(lines).encode(), len(lines))
    assert pipeline.counters.fast_path_requests == 6 and pipeline.counters.requests == 10
    between = (SECOND, SECOND + 1)
    assert pipeline.logged_between(*between, "lb1") == {("web", "v1-1"): 3}
    assert pipeline.logged_between(*between, "lb2") == {("web", "v2-1"): 2, ("web", "v1-1"): 4}
    assert pipeline.logged_between(*between, "") == {("web", "v1-1"): 1}
    assert pipeline.logged_between(*between) == {("web", "v1-1"): 8, ("web", "v2-1"): 2}
    assert pipeline.logged_by_instance() == {"lb1": 3, "lb2": 6, "": 1}


@pytest.fixture(autouse=True)
def instant_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reconciler's waits advance its FakeClock instead of waiting."""
    import fridaymorning.ingest.accounting as accounting

    async def sleep_until(moment: float, clock) -> None:  # type: ignore[no-untyped-def]
        clock.now = max(clock.now, moment)

    monkeypatch.setattr(accounting, "_sleep_until", sleep_until)


async def test_each_instance_is_reconciled_against_its_own_counters() -> None:
    """lb1 logged all it served, lb2 lost two lines: the loss is lb2's alone, and lb2 not answering
    fails only lb2's snapshot while lb1 is still reconciled."""
    pipeline = IngestPipeline()
    haproxies = {"lb1": FakeHAProxyCounters(pid=1), "lb2": FakeHAProxyCounters(pid=2)}
    reconcilers = {
        name: Reconciler(haproxy, InstanceLog(pipeline, name), settle_s=0.0, clock=FakeClock(SECOND - 0.5))
        for name, haproxy in haproxies.items()
    }
    first = {name: await reconciler.snapshot() for name, reconciler in reconcilers.items()}
    assert {snapshot.second for snapshot in first.values()} == {SECOND}
    haproxies["lb1"].stot[("web", "v1-1")] = 3
    haproxies["lb2"].stot[("web", "v1-1")] = 5
    lines = [header("lb1") + COMPACT] * 3 + [header("lb2") + COMPACT] * 3
    pipeline.ingest("\n".join(lines).encode(), len(lines))
    last = {name: await reconciler.snapshot() for name, reconciler in reconcilers.items()}
    results = {name: await reconcilers[name].check(first[name], last[name]) for name in reconcilers}
    assert results["lb1"].mismatches == []
    assert results["lb2"].mismatches == [Mismatch("web", "v1-1", 3, 5, 5)]
    assert [reconcilers[name].missing_total for name in ("lb1", "lb2")] == [0, 2]
    haproxies["lb2"].answering = False
    with pytest.raises(RouterError):
        await reconcilers["lb2"].snapshot()
    assert (await reconcilers["lb1"].snapshot()).second == SECOND + 2


def test_fleet_totals_sum_the_instances_and_keep_each() -> None:
    """The collector's top-level loss keys are the instances' sums; each instance stays under
    'instances'; requests of a host name the fleet does not know are unattributed."""
    instances = {
        "lb1": {
            "log_host": "lb1",
            "requests": 10,
            "haproxy_dropped_logs": 0,
            "reconciliation": {"missing_lines": 0},
        },
        "lb2": {
            "log_host": "lb2",
            "requests": 7,
            "haproxy_dropped_logs": 4,
            "reconciliation": {"missing_lines": 3, "errors": 2, "reconciliations": 1},
        },
        "lb3": {"log_host": "", "requests": 1, "haproxy_dropped_logs": None, "reconciliation": {}},
    }
    totals = fleet_totals(instances, {"lb1": 10, "lb2": 7, "": 1, "stray": 5})
    assert totals["haproxy_dropped_logs"] == 4 and totals["unattributed_requests"] == 5
    assert totals["reconciliation"]["missing_lines"] == 3 and totals["reconciliation"]["errors"] == 2
    assert totals["instances"]["lb2"]["reconciliation"]["missing_lines"] == 3
    text = instance_lines(totals)
    assert (
        "lb2: requests 7, haproxy_dropped_logs 4, reconciled 1 times, 0 mismatched, 3 lines missing, 2 errors"
        in text
    )
    assert "requests naming no instance: 5" in text
    samples = {
        (family.name, sample.labels["haproxy"]): sample.value
        for family in instance_families(totals["instances"])
        for sample in family.samples
    }
    assert samples[("fm_collector_instance_missing_lines", "lb2")] == 3
    assert samples[("fm_collector_instance_requests", "lb1")] == 10


def test_a_managed_instance_is_known_by_its_lines_without_a_host_name() -> None:
    assert log_hosts([("lb1", False), ("own", True)]) == {"lb1": "lb1", "own": ""}
