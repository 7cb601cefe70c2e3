"""Following a rollout without a terminal (a CI job's log): one line per event, progress lines that say
where the rollout stands, the explanation from the API's JSON; and the API token given as FM_API_TOKEN,
as a CI runner gets it, winning over the state directory's file."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from rich.console import Console

from fridaymorning.client import ApiClient, ApiUnavailableError
from fridaymorning.config import Config
from fridaymorning.testing import unstarted_service
from fridaymorning.views import explain_api_view, follow_event_line, follow_progress_line, verdict_summary

from .test_cli_render import RENDER, rollouts, version_stats

HOLD = {
    "phase": "hold",
    "checks": [
        {"name": "evidence", "phase": "hold", "detail": "54 of 100 canary requests"},
        {"name": "p50_vs_baseline", "phase": "hold", "detail": "not bounded yet"},
    ],
}
FAIL = {
    "phase": "fail",
    "checks": [
        {"name": "error_rate_vs_baseline", "phase": "fail", "detail": "canary 50.00% of n=12"},
        {"name": "evidence", "phase": "hold", "detail": "12 of 50 canary requests"},
    ],
}


def rollout(**changes: Any) -> dict[str, Any]:
    events = [
        {
            "at": 100.0,
            "kind": "started",
            "canary_weight": 0,
            "reason": "deploy v2 against v1",
            "verdict": None,
        },
        {"at": 102.25, "kind": "verdict", "canary_weight": 20, "reason": "evidence", "verdict": HOLD},
    ]
    base = {
        "id": 7,
        "service": "shop",
        "baseline": "v1",
        "version": "v2",
        "phase": "progressing",
        "step": 1,
        "canary_weight": 20,
        "started_at": 100.0,
        "finished_at": None,
        "reason": "",
        "events": events,
    }
    return {**base, **changes}


def test_an_event_line_gives_its_offset_kind_weight_and_reason() -> None:
    """Each event is one line, headed as `fm explain` heads it."""
    line = follow_event_line(rollout(), rollout()["events"][1])
    assert line == "+   2.2 s  verdict at 20%: evidence"


def test_a_progress_line_gives_phase_step_weight_requests_and_the_judge() -> None:
    """A progress line says the phase, step and weight, each version's requests and failures, and what
    the judge waits for (the latest verdict when given, else the last recorded); once the rollout is
    finished, its duration stops at the end."""
    stats = [
        {"version": "v1", "requests": 1603, "failed": 0},
        {"version": "v2", "requests": 398, "failed": 12},
    ]
    line = follow_progress_line(rollout(), stats, now=112.0)
    assert line == (
        "   12.0 s: progressing, step 1 at 20%; requests v1 1603 (0 failed), v2 398 (12 failed); "
        "judge: hold: 54 of 100 canary requests"
    )
    latest = follow_progress_line(rollout(), stats, now=112.0, verdict=FAIL)
    assert latest.endswith("judge: fail on error_rate_vs_baseline")
    finished = follow_progress_line(rollout(phase="rolled_back", finished_at=105.5), [], now=999.0)
    assert finished.startswith("    5.5 s: rolled_back") and "requests -" in finished


def test_verdict_summary_names_the_deciding_checks() -> None:
    """A failing verdict names the checks that fail it; a pass is 'pass'."""
    assert verdict_summary(FAIL) == "fail on error_rate_vs_baseline"
    assert verdict_summary({"phase": "pass", "checks": []}) == "pass"
    assert verdict_summary({"phase": "error"}) == "error"


@RENDER
@given(any_rollout=rollouts, stats=version_stats)
def test_lines_and_explanation_render_any_rollout(any_rollout: dict[str, Any], stats: dict[str, Any]) -> None:
    """Whatever the API returns (missing, NaN or huge numbers, markup-like text), the lines and the
    explanation render without an error."""
    lines = [follow_event_line(any_rollout, event) for event in any_rollout["events"]]
    lines.append(follow_progress_line(any_rollout, [stats], now=math.nan))
    assert f"{any_rollout['phase']}, step" in lines[-1]
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(explain_api_view(any_rollout))
    assert f"rollout {any_rollout['id']}" in out.getvalue()


def client_for(tmp_path: Path) -> ApiClient:
    config = Config.model_validate({"state_dir": str(tmp_path), "services": [unstarted_service()]})
    return ApiClient(config)


def test_the_token_variable_wins_over_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FM_API_TOKEN is the token when set; otherwise the state directory's file; without either, the
    error names both and never a token."""
    client = client_for(tmp_path)
    monkeypatch.delenv("FM_API_TOKEN", raising=False)
    with pytest.raises(ApiUnavailableError, match="FM_API_TOKEN is not set"):
        client._token()
    (tmp_path / "api-token").write_text("from-the-file\n")
    assert client._token() == "from-the-file"
    monkeypatch.setenv("FM_API_TOKEN", " from-the-variable ")
    assert client._token() == "from-the-variable"
    monkeypatch.setenv("FM_API_TOKEN", "")
    assert client._token() == "from-the-file"
