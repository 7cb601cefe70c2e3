"""InfluxDB 1.x and VictoriaMetrics as metric stores, on the real servers from Debian's packages.

The reference is the embedded SQLite store: the same windows go into both, and whatever is read back,
and every decision judged from it, must be the same. The outage test stops InfluxDB for 10 s while the
real UDP collector keeps receiving, starts it again on the same port and data, and counts windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from fridaymorning.analysis.judge import judge
from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.controller.replay import replay
from fridaymorning.errors import StoreError
from fridaymorning.ingest.store_sink import StoreSink
from fridaymorning.ingest.syslog import UdpCollector
from fridaymorning.models import Window, baseline_label
from fridaymorning.sketches import sketch_to_bytes
from fridaymorning.store.influxdb import InfluxMetricStore
from fridaymorning.store.remote import LineProtocolStore
from fridaymorning.store.sqlite import SqliteMetricStore
from fridaymorning.store.victoriametrics import VictoriaMetricsStore
from fridaymorning.testing import ControllerHarness, harness_service, wait_for, wait_for_sync
from fridaymorning.testservers import RunningServer, influxdb_server, stop, victoria_metrics_server

pytestmark = pytest.mark.timeout(600)

OUTAGE_S = 10.0


def store_of(server: RunningServer) -> LineProtocolStore:
    """The fridaymorning store on `server` (InfluxDB or VictoriaMetrics), database `fm`."""
    if server.name == "influxd":
        return InfluxMetricStore(f"influxdb://127.0.0.1:{server.port}/fm")
    return VictoriaMetricsStore(f"victoriametrics://127.0.0.1:{server.port}/fm")


def window_key(window: Window) -> tuple[Any, ...]:
    """Everything a window holds, sketches as their exact bytes."""
    return (
        window.backend,
        window.version,
        window.second,
        window.requests,
        tuple(window.status),
        window.failed,
        window.bytes,
        sketch_to_bytes(window.tr),
        sketch_to_bytes(window.ta),
    )


class TeeStore:
    """What the harness writes goes to SQLite and to the remote store; the controller reads `reader`.

    Each write is followed by the collector's mark and waits until the remote store holds it, so that
    both stores hold the same seconds whenever the controller looks.
    """

    def __init__(self, sqlite: SqliteMetricStore, remote: LineProtocolStore, reader: Any) -> None:
        self.sqlite, self.remote, self.reader = sqlite, remote, reader
        self.written: list[Window] = []

    def write(self, windows: Sequence[Window]) -> None:
        self.sqlite.write(windows)
        self.remote.write(windows)
        self.remote.mark_complete(max(window.second for window in windows) + 1)
        assert self.remote.flush(60), self.remote.buffer_stats()
        self.written.extend(windows)

    def query(self, backend: str, version: str, start: int, end: int) -> list[Window]:
        return self.reader.query(backend, version, start, end)  # type: ignore[no-any-return]

    def query_complete(self, backend: str, version: str, start: int, end: int) -> list[Window]:
        """What the controller calls: the remote store's check that the judged seconds are all in."""
        return self.reader.query_complete(backend, version, start, end)  # type: ignore[no-any-return]

    def record_decision(self, event: dict[str, object]) -> None:
        self.remote.record_decision(event)

    def close(self) -> None:
        pass


class NoisyHarness(ControllerHarness):
    """The controller harness with latencies that vary: each second's windows drawn from a seeded RNG,
    the canary's Tr twice as slow, so the latency checks read real sketches (a canary within
    `latency_tolerance`, 1.5x, might be promoted before it is shown slower)."""

    def _write_second(self, rollout: Any, second: int) -> None:
        rng = random.Random(second)
        controller = self.controller
        canary = self.rps * rollout.canary_weight // 100
        fresh = controller.baseline_instances
        baseline_version = baseline_label(rollout.baseline) if fresh else rollout.baseline
        baseline = canary if fresh else self.rps - canary
        windows = []
        if canary:
            windows.append(noisy_window(rng, controller.canary_backend, rollout.version, second, canary, 2.0))
        if baseline:
            windows.append(noisy_window(rng, controller.backend, baseline_version, second, baseline, 1.0))
        self.metrics.write(windows)


def noisy_window(
    rng: random.Random, backend: str, version: str, second: int, requests: int, slowdown: float
) -> Window:
    window = Window(backend, version, second, requests=requests)
    for _ in range(requests):
        latency = rng.lognormvariate(2.5, 0.6) * slowdown
        window.tr.add(latency)
        window.ta.add(latency + rng.random())
        window.status[1] += 1
    return window


async def rollout_on(tmp_path: Path, server: RunningServer, name: str) -> tuple[NoisyHarness, TeeStore]:
    """A whole rollout (10% then 50%) run by the real controller, judging from `server`'s store."""
    remote = store_of(server)
    sqlite = SqliteMetricStore(f"sqlite:///{tmp_path / name}.db")
    harness = NoisyHarness(harness_service(10, 50), tmp_path / f"{name}-state.db", rps=300)
    tee = TeeStore(sqlite, remote, reader=remote)
    harness.metrics = tee  # type: ignore[assignment]
    # VictoriaMetrics drops samples older than its retention: the virtual clock starts ten minutes ago
    harness.clock.now = float(int(time.time()) - 600)
    harness.controller = harness._new_controller()
    await harness.controller.start()
    harness.controller.deploy("v2")
    for _ in range(120):
        await harness.drive(1)
        if not harness.controller.states.active_rollout("web"):
            break
    await asyncio.wait_for(harness.controller.wait(), 60)
    return harness, tee


def verdicts_from(store: Any, harness: NoisyHarness, events: list[dict[str, Any]]) -> list[str]:
    """The judge's full verdict (every check's statistic, bound and threshold) on each recorded window."""
    verdicts = []
    for event in events:
        window = (event.get("verdict") or {}).get("window")
        if window is None:
            continue
        start, end = int(window["start"]), int(window["end"])
        canary = store.query("web", "v2", start, end)
        baseline = store.query("web", "v1", start, end)
        verdict = judge(canary, baseline, harness.service.analysis)
        verdicts.append(json.dumps(verdict.to_dict(), sort_keys=True, default=str))
    return verdicts


async def assert_same_decisions_as_sqlite(tmp_path: Path, server: RunningServer) -> None:
    """The controller, judging from the remote store, decides; the SQLite copy of the same windows
    gives the same verdicts on every judged window, and `fm replay` on the remote store reproduces
    every decision."""
    harness, tee = await rollout_on(tmp_path, server, server.name)
    (rollout,) = harness.states.rollouts("web")
    events = harness.states.events(rollout.id)
    # the canary is twice as slow: the latency sketches read back from the store roll it back
    assert rollout.phase is RolloutPhase.ROLLED_BACK, [event["reason"] for event in events]
    assert "slower" in rollout.reason
    judged = [event for event in events if (event.get("verdict") or {}).get("window")]
    assert len(judged) >= 3
    assert verdicts_from(tee.remote, harness, judged) == verdicts_from(tee.sqlite, harness, judged)
    replayed = replay(rollout, events, tee.remote.query, harness.service)
    assert replayed and all(decision.same for decision in replayed), replayed
    first, last = tee.written[0].second, tee.written[-1].second + 1
    for version in ("v1", "v2"):
        remote_windows = [window_key(w) for w in tee.remote.query("web", version, first, last)]
        assert remote_windows == [window_key(w) for w in tee.sqlite.query("web", version, first, last)]
    tee.remote.close()
    tee.sqlite.close()


@pytest.mark.influxdb
async def test_a_rollout_judged_from_influxdb_decides_as_one_judged_from_sqlite(
    tmp_path: Path, influxdb: RunningServer
) -> None:
    """Same windows, same decisions: InfluxDB returns every window and sketch exactly as SQLite does."""
    await assert_same_decisions_as_sqlite(tmp_path, influxdb)


@pytest.mark.prometheus
async def test_a_rollout_judged_from_victoriametrics_decides_as_one_judged_from_sqlite(
    tmp_path: Path, victoria_metrics: RunningServer
) -> None:
    """Same for VictoriaMetrics, which keeps numbers only: sketches travel as bins and exact float halves."""
    await assert_same_decisions_as_sqlite(tmp_path, victoria_metrics)


@pytest.mark.prometheus
def test_victoriametrics_with_its_default_latency_offset_is_refused_for_judging(tmp_path: Path) -> None:
    """An unconfigured VictoriaMetrics hides the newest 30 s from queries: the judge refuses it, naming
    the flag, though plain reads (fm replay, charts) still work."""
    with victoria_metrics_server(tmp_path / "vm", latency_offset=None) as server:
        store = store_of(server)
        try:
            store.write([Window("web", "v1", int(time.time()) - 5, requests=1)])
            store.mark_complete(int(time.time()))
            assert store.flush(60)
            with pytest.raises(StoreError, match=r"-search\.latencyOffset"):
                store.query_complete("web", "v1", 0, int(time.time()) - 2)
            assert wait_for_sync(
                lambda: store.query("web", "v1", 0, int(time.time())), "the window read back"
            )
        finally:
            store.close()


def compact_line(second: float, version: str, status: int, tr_ms: int) -> bytes:
    """One request in the compact log format, as HAProxy would send it by syslog."""
    whole, millis = int(second), int((second % 1) * 1000)
    return (
        f"<134>Dec  2 02:00:00 haproxy[1]: fm1 {whole}.{millis:03d} web {version}-1 {status} "
        f"{tr_ms} {tr_ms + 1} 512 -- 127.0.0.1"
    ).encode()


async def send_traffic(port: int, seconds: float, rng: random.Random) -> int:
    """About 100 requests a second (both versions, some 503s) for `seconds`; the number sent."""
    sent = 0
    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        while time.monotonic() < deadline:
            for _ in range(10):
                status = 503 if rng.random() < 0.05 else 200
                line = compact_line(time.time(), rng.choice(("v1", "v2")), status, int(rng.expovariate(0.05)))
                udp.sendto(line, ("127.0.0.1", port))
                sent += 1
            await asyncio.sleep(0.1)
    return sent


@pytest.mark.influxdb
async def test_an_influxdb_outage_of_ten_seconds_loses_no_window(
    tmp_path: Path, influxdb: RunningServer
) -> None:
    """The real collector keeps receiving while InfluxDB is stopped for 10 s; the buffer holds the
    windows, the judge refuses the incomplete seconds meanwhile, and once InfluxDB is back on the same
    port and data every window is there, identical to SQLite's copy."""
    remote = InfluxMetricStore(f"influxdb://127.0.0.1:{influxdb.port}/fm")
    sqlite = SqliteMetricStore(f"sqlite:///{tmp_path / 'reference.db'}")
    into_influxdb = StoreSink(remote, lateness_s=1.0)

    async def sink(windows: list[Window]) -> None:
        sqlite.write(windows)
        await into_influxdb(windows)

    collector = UdpCollector("127.0.0.1", 0, sink, lateness_s=1.0)
    await collector.start()
    heartbeat = asyncio.create_task(into_influxdb.heartbeat())
    rng = random.Random(7)
    first_second = int(time.time())
    restarted = contextlib.ExitStack()
    try:
        sent = await send_traffic(collector.address[1], 3.0, rng)
        await wait_for(lambda: remote.buffer_stats()["sent"], "windows written before the outage")
        stop(influxdb)
        outage = asyncio.create_task(send_traffic(collector.address[1], OUTAGE_S, rng))
        await wait_for(lambda: remote.buffer_stats()["retries"], "the writer retrying while InfluxDB is down")
        with pytest.raises(StoreError):  # the judge gets an error (it holds), never partial data
            await asyncio.to_thread(remote.query_complete, "web", "v1", first_second, int(time.time()) - 1)
        sent += await outage
        assert remote.buffer_stats()["pending"], "windows held while InfluxDB is down"
        restarted.enter_context(influxdb_server(influxdb.data_dir, port=influxdb.port))
        sent += await send_traffic(collector.address[1], 2.0, rng)
    finally:
        heartbeat.cancel()
        await collector.stop()
    assert collector.stats()["requests"] == sent  # loopback UDP: the collector itself lost nothing
    try:
        assert await asyncio.to_thread(remote.flush, 120), remote.buffer_stats()
        stats = remote.buffer_stats()
        assert stats["overflowed"] == 0 and stats["rejected"] == 0 and cast(int, stats["retries"]) > 0
        last_second = int(time.time()) + 1
        for version in ("v1", "v2"):
            expected = [window_key(w) for w in sqlite.query("web", version, first_second, last_second)]
            stored = await asyncio.to_thread(remote.query, "web", version, first_second, last_second)
            assert len(expected) >= 10  # about 15 s of traffic, both versions every second
            assert [window_key(w) for w in stored] == expected
        total = sum(
            w.requests for v in ("v1", "v2") for w in remote.query("web", v, first_second, last_second)
        )
        assert total == sent
        judged_end = int(time.time()) - 2
        assert await asyncio.to_thread(remote.query_complete, "web", "v1", first_second, judged_end)
    finally:
        remote.close()
        sqlite.close()
        restarted.close()


@pytest.mark.influxdb
def test_windows_of_one_second_from_two_writers_all_count(tmp_path: Path, influxdb: RunningServer) -> None:
    """Two collectors (or one restarted) writing the same second never overwrite each other's points."""
    first, second = store_of(influxdb), store_of(influxdb)
    try:
        now = int(time.time())
        for store in (first, second):
            store.write([Window("web", "v1", now, requests=3), Window("web", "v1", now, requests=4)])
            assert store.flush(60)
        (merged,) = first.query("web", "v1", now, now + 1)
        assert merged.requests == 14
        assert first.query("web", "v1", now + 1, now + 1) == []
    finally:
        first.close()
        second.close()


DASHBOARD = (
    Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "fridaymorning-influxdb.json"
)
# What Grafana puts in place of its macros and the dashboard's variables before it sends a query.
GRAFANA_MACROS = {
    "$timeFilter": "time > now() - 1h",
    "$__interval_ms": "10000",
    "$__interval": "10s",
    "$service": "web",
}


def grafana_queries(model: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, InfluxQL) of every panel target, the annotation and the variable, macros substituted."""
    found = [
        (f"panel {panel['title']!r}", target["query"])
        for panel in model["panels"]
        for target in panel["targets"]
    ]
    found += [(f"annotation {item['name']!r}", item["query"]) for item in model["annotations"]["list"]]
    found += [
        (f"variable {item['name']!r}", item["query"])
        for item in model["templating"]["list"]
        if item["type"] == "query"
    ]
    substituted = []
    for where, query in found:
        for macro, value in GRAFANA_MACROS.items():
            query = query.replace(macro, value)
        substituted.append((where, query))
    return substituted


@pytest.mark.influxdb
async def test_every_grafana_panel_query_returns_data_from_influxdb(
    tmp_path: Path, influxdb: RunningServer
) -> None:
    """After a rollout judged from InfluxDB, each query of the shipped dashboard (panels, the decisions
    annotation, the service variable) runs on the real InfluxDB and returns at least one value."""
    _, tee = await rollout_on(tmp_path, influxdb, "grafana")
    assert tee.remote.flush(60)
    queries = grafana_queries(json.loads(DASHBOARD.read_text(encoding="utf-8")))
    assert len(queries) >= 7
    for where, query in queries:
        assert not re.search(r"\$[A-Za-z_{]", query), f"{where}: a macro left in {query}"
        answer = httpx.get(f"{influxdb.url}/query", params={"db": "fm", "q": query}, timeout=30).json()
        result = answer["results"][0]
        assert "error" not in result, f"{where}: {result.get('error')} in {query}"
        values = [
            value for series in result.get("series", []) for row in series["values"] for value in row[1:]
        ]
        assert any(value is not None for value in values), f"{where}: no data for {query}"
    tee.remote.close()
    tee.sqlite.close()
