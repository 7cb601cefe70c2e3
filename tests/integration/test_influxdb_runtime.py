"""`fm up` with InfluxDB as its only metric store: the collector process writes there, the controller
judges from there, `fm status` shows the write buffer, and `fm replay` reproduces every decision."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import yaml

from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.testing import EVENT_DEADLINE_S, run_fm, wait_for_sync
from fridaymorning.testservers import RunningServer

pytestmark = [pytest.mark.haproxy, pytest.mark.influxdb, pytest.mark.timeout(900)]


async def test_a_promotion_and_a_rollback_judged_from_influxdb_alone(
    tmp_path: Path, influxdb: RunningServer, runtime_config, service_settings, start_runtime
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
    traffic = BackgroundTraffic(f"http://{config.services[0].frontend}/", rate=150)
    traffic.start()
    controller = runtime.controllers["web"]
    try:
        outcomes = []
        for version in ("v2", "broken4"):
            controller.deploy(version)
            outcomes.append(await asyncio.wait_for(controller.wait(), 2 * EVENT_DEADLINE_S))
        status = await asyncio.to_thread(run_fm, "status", config=path)  # the API runs on this loop
    finally:
        traffic.stop()
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
