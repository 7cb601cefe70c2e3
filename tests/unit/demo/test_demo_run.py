"""`fm demo`'s own logic: its progress lines, its JSON summary, and when it keeps its state directory."""

from __future__ import annotations

import asyncio
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from fridaymorning.analysis.verdict import Check, Verdict, VerdictPhase
from fridaymorning.config import load_config
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.demo import run
from fridaymorning.demo.run import (
    CONFIG_FILE,
    demo_config,
    judge_summary,
    progress_line,
    run_releases,
    served_since,
    summarize,
    write_config,
)


def rollout(
    version: str, phase: RolloutPhase, reason: str = "", *, step: int = 0, weight: int = 20
) -> RolloutState:
    return RolloutState(1, "web", version, "v1", phase, step, weight, 100.0, 100.0, None, reason)


def check(name: str, phase: VerdictPhase, detail: str = "") -> Check:
    return Check(name, phase, math.nan, math.nan, 1.0, 0, detail)


def test_progress_line_names_phase_step_weight_requests_and_the_judge() -> None:
    """A progress line says where the rollout is, what each version served, and what holds it."""
    verdict = Verdict(
        VerdictPhase.HOLD,
        (check("evidence", VerdictPhase.PASS), check("p90_vs_baseline", VerdictPhase.HOLD)),
        "p90_vs_baseline: …",
    )
    line = progress_line(
        "v2", 12.4, rollout("v2", RolloutPhase.PROGRESSING), 2, {"v1": 1603, "v2": 398, "none": 0}, verdict
    )
    assert line == (
        "v2  12 s: progressing, step 1 of 2 at 20%; requests v1 1603, v2 398; judge: hold on p90_vs_baseline"
    )


def test_progress_line_before_the_first_verdict() -> None:
    """Before the rollout is stored or judged, the line says it is starting and nothing was served."""
    assert progress_line("v3", 0.2, None, 2, {}, None) == "v3   0 s: starting; requests none yet"


def test_judge_summary_shows_how_far_evidence_has_come() -> None:
    """While canary requests are too few, the summary quotes the evidence check; a pass is just 'pass'."""
    gathering = Verdict(
        VerdictPhase.HOLD,
        (check("evidence", VerdictPhase.HOLD, "54 of 100 canary requests"), check("p50", VerdictPhase.HOLD)),
        "",
    )
    assert judge_summary(gathering) == "hold: 54 of 100 canary requests"
    assert judge_summary(Verdict(VerdictPhase.PASS, (), "every check passed")) == "pass"
    failing = Verdict(VerdictPhase.FAIL, (check("error_rate_vs_baseline", VerdictPhase.FAIL),), "")
    assert judge_summary(failing) == "fail on error_rate_vs_baseline"


def test_served_since_counts_each_versions_answers_in_between() -> None:
    """Requests per version between two tallies; a version new in the second counts from zero."""
    before = {"v1": {"requests": 100, "errors": 0}}
    now = {"v1": {"requests": 180, "errors": 0}, "v2": {"requests": 20, "errors": 0}}
    assert served_since(before, now) == {"v1": 80, "v2": 20}


def test_summary_carries_each_releases_reason_and_rollout() -> None:
    """Every release in the JSON says why it ended as it did, and which rollout `fm explain` shows."""
    outcomes = [
        (rollout("v2", RolloutPhase.PROMOTED, "all 2 steps passed"), 22.4),
        (rollout("v3", RolloutPhase.ROLLED_BACK, "error_rate_vs_baseline: worse"), 6.0),
    ]
    tally = {
        "v1": {"requests": 900, "errors": 0},
        "v2": {"requests": 700, "errors": 0},
        "v3": {"requests": 90, "errors": 7},
    }
    summary = summarize(outcomes, tally)
    assert [(r["version"], r["reason"], r["rollout"]) for r in summary["releases"]] == [
        ("v2", "all 2 steps passed", 1),
        ("v3", "error_rate_vs_baseline: worse", 1),
    ]
    assert summary["ok"] is True


def test_a_5xx_from_haproxy_itself_is_a_failed_stable_request() -> None:
    """An answer without a version (HAProxy's 503 when no server is up) failed a user: the demo is not OK."""
    outcomes = [(rollout("v2", RolloutPhase.PROMOTED), 20.0), (rollout("v3", RolloutPhase.ROLLED_BACK), 6.0)]
    tally = {"v1": {"requests": 900, "errors": 0}, "unknown": {"requests": 12, "errors": 12}}
    summary = summarize(outcomes, tally)
    assert summary["failed_stable_requests"] == 12
    assert summary["ok"] is False


def test_the_written_config_reads_back_as_the_demos_config(tmp_path: Path) -> None:
    """The config written into the state directory loads with `fm`'s loader and points at that directory,
    so `fm explain ID -c <state_dir>/fridaymorning.yaml` reads the demo's rollouts."""
    config = demo_config(tmp_path)
    write_config(config, tmp_path / CONFIG_FILE)
    loaded = load_config(tmp_path / CONFIG_FILE)
    assert loaded.state_path() == config.state_path()
    assert loaded.services[0].rollout == config.services[0].rollout
    assert loaded.services[0].analysis == config.services[0].analysis


def finishing(ok: bool) -> Any:
    """A stand-in for the demo's run inside its state directory: it writes a file and ends OK or not."""

    async def run_in(state_dir: Path, *args: Any) -> dict[str, Any]:
        (state_dir / "state.db").write_text("rollouts")
        return {"ok": ok}

    return run_in


async def test_a_demo_that_is_not_ok_keeps_its_state_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """NOT OK: the state directory stays, and the JSON and the progress say where it is."""
    monkeypatch.setattr(run, "run_in", finishing(False))
    said: list[str] = []
    result = await run_releases(200.0, True, None, said.append)  # type: ignore[arg-type]
    state_dir = Path(result["state_dir"])
    try:
        assert (state_dir / "state.db").read_text() == "rollouts"
        assert any(str(state_dir) in line for line in said)
    finally:
        shutil.rmtree(state_dir)


def record(created: list[Path], path: Path) -> str:
    path.mkdir()
    created.append(path)
    return str(path)


async def test_a_demo_that_is_ok_removes_its_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """OK: nothing is left behind, and the JSON names no state directory."""
    created: list[Path] = []
    monkeypatch.setattr(tempfile, "mkdtemp", lambda prefix: record(created, tmp_path / "fm-demo-ok"))
    monkeypatch.setattr(run, "run_in", finishing(True))
    result = await run_releases(200.0, True, None, lambda _: None)  # type: ignore[arg-type]
    assert "state_dir" not in result
    assert created == [tmp_path / "fm-demo-ok"]
    assert not created[0].exists()


@pytest.mark.parametrize(("error", "kept"), [(asyncio.CancelledError(), False), (RuntimeError("boom"), True)])
async def test_an_interrupted_demo_cleans_up_and_a_failed_one_keeps_its_state(
    monkeypatch: pytest.MonkeyPatch, error: BaseException, kept: bool
) -> None:
    """Ctrl-C removes the state directory; an unexpected failure keeps it for a look, and says where."""
    created: list[Path] = []

    async def run_in(state_dir: Path, *args: Any) -> dict[str, Any]:
        created.append(state_dir)
        raise error

    monkeypatch.setattr(run, "run_in", run_in)
    said: list[str] = []
    with pytest.raises(type(error)):
        await run_releases(200.0, True, None, said.append)  # type: ignore[arg-type]
    assert created[0].exists() is kept
    assert any(str(created[0]) in line for line in said) is kept
    if kept:
        shutil.rmtree(created[0])
