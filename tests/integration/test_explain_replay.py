"""`fm history`, `fm explain` and `fm replay` on rollouts that ran: replay reproduces every decision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.testing import deploy_each, run_fm

if TYPE_CHECKING:
    from tests.integration.conftest import RuntimeConfig, ServiceSettings, StartRuntime

pytestmark = pytest.mark.haproxy


async def test_explain_and_replay_a_promotion_and_a_rollback(
    tmp_path: Path,
    runtime_config: RuntimeConfig,
    service_settings: ServiceSettings,
    start_runtime: StartRuntime,
) -> None:
    """After a promotion and a rollback, history lists both, explain shows each decision's evidence,
    and replay judges the stored windows again to the same decisions."""
    config = runtime_config(service_settings())
    path = tmp_path / "fridaymorning.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    runtime = await start_runtime(config)
    with BackgroundTraffic(f"http://{config.services[0].frontend}/", rate=150):
        outcomes = await deploy_each(runtime.controllers["web"], ("v2", "broken4"))
    assert [o.phase for o in outcomes] == [RolloutPhase.PROMOTED, RolloutPhase.ROLLED_BACK]

    history = json.loads(run_fm("history", "--json", config=path).stdout)
    assert [(r["version"], r["phase"]) for r in history] == [("broken4", "rolled_back"), ("v2", "promoted")]
    for rollout in history:
        explained = json.loads(run_fm("explain", str(rollout["id"]), "--json", config=path).stdout)
        judged = [event for event in explained["events"] if event["verdict"]]
        assert judged, explained
        for event in judged:
            assert {"start", "end"} <= set(event["verdict"]["window"])
            assert all({"statistic", "bound", "threshold", "n"} <= set(c) for c in event["verdict"]["checks"])
        replayed = run_fm("replay", str(rollout["id"]), "--json", config=path)
        summary = json.loads(replayed.stdout)
        assert replayed.returncode == 0, summary
        assert summary["decisions"] >= 1 and summary["differing"] == []
    human = run_fm("explain", str(history[0]["id"]), config=path)
    assert "rolled_back" in human.stdout and "threshold" in human.stdout
