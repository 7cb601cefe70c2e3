"""Which stable version wins: after a promotion the state store's, and `fm validate` says so when it
differs from the config's `stable:`."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from fridaymorning.cli import app
from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.controller.state import StateStore, recorded_stable_versions
from fridaymorning.testing import unstarted_service


def write_config(directory: Path) -> Path:
    config = {"state_dir": "state", "services": [unstarted_service(frontend="127.0.0.1:18080")]}
    path = directory / "fridaymorning.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def promote(state_db: Path, version: str) -> None:
    """Record a promotion of `version` of web, as the controller does."""
    states = StateStore(state_db)
    rollout = states.create_rollout("web", version, "v1", 1000.0)
    states.transition(rollout, 1010.0, "promoted", "all steps passed", phase=RolloutPhase.PROMOTED)
    states.close()


def test_validate_says_the_promoted_stable_wins(tmp_path: Path) -> None:
    """`fm validate` on a config whose state store recorded a promotion names both versions and which
    one is used; with --json it gives the recorded one beside the config's."""
    config = write_config(tmp_path)
    promote(tmp_path / "state" / "state.db", "v2")
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 0, result.output
    assert "v2 is stable since a promotion" in result.output
    assert "it wins over `stable: v1`" in result.output
    as_json = CliRunner().invoke(app, ["validate", str(config), "--json"])
    (service,) = json.loads(as_json.output)["services"]
    assert (service["stable"], service["recorded_stable"]) == ("v1", "v2")


def test_validate_is_quiet_without_a_store_or_when_they_agree(tmp_path: Path) -> None:
    """No state store yet, or a store agreeing with the config: no note, and no store is created."""
    config = write_config(tmp_path)
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 0 and "note" not in result.output
    assert not (tmp_path / "state").exists()
    promote(tmp_path / "state" / "state.db", "v1")
    again = CliRunner().invoke(app, ["validate", str(config)])
    assert again.exit_code == 0 and "note" not in again.output


def test_recorded_stables_read_a_store_without_changing_it(tmp_path: Path) -> None:
    """Reading the recorded stable versions opens the store read-only: its bytes stay the same."""
    state_db = tmp_path / "state.db"
    promote(state_db, "v2")
    before = state_db.read_bytes()
    assert recorded_stable_versions(state_db) == {"web": "v2"}
    assert state_db.read_bytes() == before
    assert recorded_stable_versions(tmp_path / "missing.db") == {}


def test_explain_json_is_standard_json_when_a_statistic_is_nan(tmp_path: Path) -> None:
    """`fm explain --json` of a verdict whose statistics the judge could not compute prints null for
    them, never the non-standard NaN that strict JSON readers reject."""
    config = write_config(tmp_path)
    states = StateStore(tmp_path / "state" / "state.db")
    rollout = states.create_rollout("web", "v2", "v1", 1000.0)
    check = {"name": "p99_slo", "phase": "hold", "statistic": float("nan"), "bound": float("inf"),
             "threshold": 1000.0, "n": 0, "detail": "no canary latencies yet"}  # fmt: skip
    states.record(rollout, 1001.0, "verdict", "hold", {"phase": "hold", "reason": "hold", "checks": [check]})
    states.close()
    result = CliRunner().invoke(app, ["explain", "1", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    explained = json.loads(result.output, parse_constant=refuse)
    (judged,) = [event for event in explained["events"] if event["verdict"]]
    assert judged["verdict"]["checks"][0]["statistic"] is None
    assert judged["verdict"]["checks"][0]["bound"] is None
