"""`fm up` with InfluxDB as its only metric store: the collector process writes there, the controller
judges from there, `fm status` shows the write buffer, and `fm replay` reproduces every decision."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.testing import EVENT_DEADLINE_S, deploy_each, run_fm, wait_for, wait_for_sync
from fridaymorning.testservers import RunningServer, influxdb_server, stop

if TYPE_CHECKING:
    from tests.integration.conftest import RuntimeConfig, ServiceSettings, StartRuntime

pytestmark = [pytest.mark.haproxy, pytest.mark.influxdb, pytest.mark.timeout(900)]


async def test_a_promotion_and_a_rollback_judged_from_influxdb_alone(
    tmp_path: Path,
    influxdb: RunningServer,
    runtime_config: RuntimeConfig,
    service_settings: ServiceSettings,
    start_runtime: StartRuntime,
) -> None:
    """A good version is promoted and a broken one rolled back, from windows in InfluxDB; the decisions
    are points there too; no SQLite metric file is made; replay from InfluxDB reproduces them all.
    (InfluxDB is set up first, so it stops after `fm up`, whose collector sends its last windows.)"""
    config = runtime_config(service_settings())
    store_url = f"influxdb://127.0.0.1:{influxdb.port}/fridaymorning"
    config = config.model_copy(update={"store": config.store.model_copy(update={"url": store_url})})
    path = tmp_path / "fridaymorning.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    runtime = await start_runtime(config)
    with BackgroundTraffic(f"http://{config.services[0].frontend}/", rate=150):
        outcomes = await deploy_each(runtime.controllers["web"], ("v2", "broken4"))
        status = await asyncio.to_thread(run_fm, "status", config=path)  # the API runs on this loop
    assert [o.phase for o in outcomes] == [RolloutPhase.PROMOTED, RolloutPhase.ROLLED_BACK]
    assert "store buffer" in status.stdout and "0 overflowed" in status.stdout, status.stdout
    assert not list(config.state_path().glob("metrics.db*"))

    def influxql(query: str) -> list[list[object]]:
        answer = httpx.get(f"{influxdb.url}/query", params={"db": "fridaymorning", "q": query}, timeout=30)
        series = answer.json()["results"][0].get("series") or [{"values": []}]
        return series[0]["values"]  # type: ignore[no-any-return]

    assert influxql('SELECT sum("requests") FROM fm_window')[0][1] > 0  # type: ignore[operator]
    wait_for_sync(
        lambda: (
            {"promoted", "rolled_back"}
            <= {row[2] for row in influxql('SELECT "text", "event" FROM fm_decision')}
        ),
        "the promotion and the rollback as fm_decision points",
    )

    history = json.loads(run_fm("history", "--json", config=path).stdout)
    for rollout in history:
        replayed = run_fm("replay", str(rollout["id"]), "--json", config=path)
        summary = json.loads(replayed.stdout)
        assert replayed.returncode == 0, summary
        assert summary["decisions"] >= 1 and summary["differing"] == []


OUTAGE_S = 10.0


@pytest.fixture
def restarts() -> Iterator[contextlib.ExitStack]:
    """Servers a test starts again; requested before `start_runtime`, so they stop after `fm up`."""
    with contextlib.ExitStack() as stack:
        yield stack


async def test_an_influxdb_outage_of_ten_seconds_during_a_rollout_loses_no_window(
    tmp_path: Path,
    influxdb: RunningServer,
    restarts: contextlib.ExitStack,
    runtime_config: RuntimeConfig,
    service_settings: ServiceSettings,
    start_runtime: StartRuntime,
) -> None:
    """InfluxDB is stopped for 10 s in the middle of a step: the collector's buffer holds the windows,
    the judge holds (error verdicts, never a pass), and once InfluxDB is back on the same port and data
    the rollout is promoted and InfluxDB holds every request the collector counted."""
    steps = [
        {"weight": 20, "min_duration_s": 25, "max_duration_s": 180, "min_requests": 50},
        {"weight": 50, "min_duration_s": 3, "max_duration_s": 180, "min_requests": 50},
    ]
    config = runtime_config(service_settings(steps=steps))
    store_url = f"influxdb://127.0.0.1:{influxdb.port}/fridaymorning"
    config = config.model_copy(update={"store": config.store.model_copy(update={"url": store_url})})
    path = tmp_path / "fridaymorning.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    runtime = await start_runtime(config)
    controller = runtime.controllers["web"]
    collector = runtime.collector
    assert collector is not None

    def buffer() -> dict[str, Any]:
        found: dict[str, Any] = collector.stats().get("store_buffer") or {}
        return found

    def stored_requests() -> int:
        answer = httpx.get(
            f"{influxdb.url}/query",
            params={"db": "fridaymorning", "q": 'SELECT sum("requests") FROM fm_window'},
            timeout=30,
        ).json()
        series = answer["results"][0].get("series")
        return int(series[0]["values"][0][1]) if series else 0

    with BackgroundTraffic(f"http://{config.services[0].frontend}/", rate=150):
        controller.deploy("v2")
        await wait_for(lambda: buffer().get("sent"), "windows written before the outage")
        stop(influxdb)
        await wait_for(lambda: buffer().get("retries"), "the collector's writer retrying")
        await asyncio.sleep(OUTAGE_S)  # the outage itself, with traffic flowing
        during = runtime.states.active_rollout("web")
        assert during is not None and during.phase is RolloutPhase.PROGRESSING
        assert buffer()["pending"] > 0 and buffer()["overflowed"] == 0
        restarts.enter_context(influxdb_server(influxdb.data_dir, port=influxdb.port))
        final = await asyncio.wait_for(controller.wait(), 4 * EVENT_DEADLINE_S)
    assert final is not None and final.phase is RolloutPhase.PROMOTED, final
    events = runtime.states.events(final.id)
    assert any(event["verdict"] and event["verdict"]["phase"] == "error" for event in events)
    counted = await wait_for(
        lambda: (collector.stats()["requests"] == stored_requests()) and stored_requests(),
        "every request the collector counted, in InfluxDB",
    )
    assert counted > 0 and buffer()["overflowed"] == 0 and buffer()["rejected"] == 0
    replayed_run = await asyncio.to_thread(run_fm, "replay", str(final.id), "--json", config=path)
    replayed = json.loads(replayed_run.stdout)
    # the `error` verdicts (the store was down) are not replayed: the data they lacked is there now
    assert replayed_run.returncode == 0 and not replayed["differing"], replayed
