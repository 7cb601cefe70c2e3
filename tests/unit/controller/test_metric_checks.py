"""Custom checks in the controller loop, on fakes: a value past the threshold rolls the canary back,
errors hold until their limit fails the check, and a provider never holds up the judge."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from fridaymorning.analysis.verdict import Check, Verdict, VerdictPhase
from fridaymorning.config import ServiceConfig
from fridaymorning.controller.metric_checks import MetricChecks, query_window, with_checks
from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.errors import ProviderError
from fridaymorning.testing import EVENT_DEADLINE_S, ControllerHarness, FakeMetricProvider, harness_service

PROMETHEUS = "prometheus://127.0.0.1:9090"
QUERY = 'max(app_latency_seconds{service="{{ service }}",version="{{ version }}"}[{{ window }}])'
RENDERED = 'max(app_latency_seconds{service="web",version="v2"}[30s])'


def service_with_check(**check: Any) -> ServiceConfig:
    settings = {
        "name": "latency",
        "provider": PROMETHEUS,
        "query": QUERY,
        "fail_above": 0.5,
        "interval_s": 1,
        "window_s": 30,
        "consecutive_error_limit": 3,
        **check,
    }
    service = harness_service(10, 50).model_dump()
    service["rollout"]["checks"] = [settings]
    return ServiceConfig.model_validate(service)


def make_harness(tmp_path: Path, provider: FakeMetricProvider, **check: Any) -> ControllerHarness:
    return ControllerHarness(
        service_with_check(**check), tmp_path / "state.db", providers={PROMETHEUS: provider}
    )


async def run_rollout(harness: ControllerHarness, seconds: int = 80) -> Any:
    rollout = await harness.start_rollout(seconds=seconds)
    task = harness.controller._task
    if task is not None and task.done():
        return task.result()
    return harness.states.rollout(rollout.id)


def checks_named(verdict: dict[str, Any] | None, name: str) -> list[dict[str, Any]]:
    return [check for check in (verdict or {}).get("checks", []) if check["name"] == name]


async def test_canary_within_the_threshold_is_promoted_and_the_check_is_shown(tmp_path: Path) -> None:
    """A passing custom check lets a healthy canary through, and is part of every verdict."""
    provider = FakeMetricProvider({RENDERED: [0.1]})
    harness = make_harness(tmp_path, provider)
    final = await run_rollout(harness)
    assert final.phase is RolloutPhase.PROMOTED, final.reason
    assert provider.calls and provider.calls[0][0] == RENDERED
    verdicts = [e["verdict"] for e in harness.states.events(final.id) if e.get("verdict")]
    shown = checks_named(verdicts[-1], "latency")
    assert shown and shown[0]["phase"] == "pass" and shown[0]["statistic"] == 0.1
    assert provider.closed is False
    await harness.controller.stop()
    assert provider.closed is True


async def test_value_past_the_threshold_rolls_the_canary_back(tmp_path: Path) -> None:
    """A healthy canary (by the logs) whose custom metric breaks the threshold is rolled back, and the
    reason names the check, its value and its threshold."""
    provider = FakeMetricProvider({RENDERED: [0.1, 0.1, 0.9]})
    harness = make_harness(tmp_path, provider)
    final = await run_rollout(harness)
    assert final.phase is RolloutPhase.ROLLED_BACK
    assert final.reason.startswith("latency: measurement 3 of 3: 0.9 > 0.5 (prometheus://127.0.0.1:9090)")
    assert harness.router.percents_of("canary")[-1] == 0


async def test_errors_hold_then_fail_at_the_limit(tmp_path: Path) -> None:
    """A failing query is an error measurement: the verdict errs (never passes), and the third error
    in a row fails the check, which rolls the canary back."""
    provider = FakeMetricProvider({RENDERED: [ProviderError("HTTP 400: parse error")]})
    harness = make_harness(tmp_path, provider)
    rollout = await harness.start_rollout()
    phases: list[str] = []
    for _ in range(30):
        await harness.drive(1)
        verdict = harness.controller.current_verdict(harness.states.rollout(rollout.id))
        phases += [check["phase"] for check in checks_named(verdict, "latency")]
        if not harness.states.rollout(rollout.id).active:  # type: ignore[union-attr]
            break
    final = harness.states.rollout(rollout.id)
    assert final is not None and final.phase is RolloutPhase.ROLLED_BACK
    assert final.reason.startswith("latency: 3 errors in a row (limit 3); last: HTTP 400: parse error")
    assert "pass" not in phases and "error" in phases
    recorded = [e["verdict"]["phase"] for e in harness.states.events(rollout.id) if e.get("verdict")]
    assert "error" in recorded and "pass" not in recorded


async def test_a_stalled_provider_never_holds_up_the_judge(tmp_path: Path) -> None:
    """While a provider does not answer, the judge still rolls back a canary failing by the logs; the
    check meanwhile holds."""
    provider = FakeMetricProvider({RENDERED: [0.1]})
    provider.stall = True
    harness = ControllerHarness(
        service_with_check(timeout_s=300),
        tmp_path / "state.db",
        canary_failure_rate=0.3,
        providers={PROMETHEUS: provider},
    )
    final = await run_rollout(harness, seconds=40)
    assert final.phase is RolloutPhase.ROLLED_BACK
    assert "error_rate" in final.reason
    verdicts = [e["verdict"] for e in harness.states.events(final.id) if e.get("verdict")]
    assert checks_named(verdicts[-1], "latency")[0]["phase"] == "hold"
    assert len(provider.calls) == 1  # one query in flight, none started beside it
    provider.release()
    await harness.controller.stop()


async def test_without_custom_checks_the_verdict_is_untouched() -> None:
    """A service without custom checks gets the judge's verdict itself."""
    verdict = Verdict(VerdictPhase.PASS, (), "every check passed")
    checks = MetricChecks("web", [], {})
    assert checks.add_checks(verdict, None, 0.0) is verdict  # type: ignore[arg-type]
    assert with_checks(verdict, ()) is verdict


def test_a_failing_custom_check_fails_a_passing_verdict() -> None:
    """Custom checks join the judge's checks; the verdict's phase is decided again over all of them."""
    passing = Check("error_rate_slo", VerdictPhase.PASS, 0.0, 0.0, 0.01, 500)
    custom = Check("latency", VerdictPhase.ERROR, math.nan, math.nan, 0.5, 1, "HTTP 400")
    combined = with_checks(Verdict(VerdictPhase.PASS, (passing,), "every check passed"), (custom,))
    assert combined.phase is VerdictPhase.ERROR and combined.reason == "latency: HTTP 400"
    assert [check.name for check in combined.checks] == ["error_rate_slo", "latency"]


def test_query_window_is_the_last_closed_seconds() -> None:
    """The window ends where the judge's data ends (the collector's lag) and spans `window_s`."""
    window = query_window(1000.7, 1.5, 60)
    assert (window.start, window.end, window.seconds) == (939, 999, 60)


async def test_measurements_belong_to_their_rollout(tmp_path: Path) -> None:
    """A new rollout starts with no measurements: the failure of the previous one does not carry over."""
    provider = FakeMetricProvider({RENDERED: [0.9]})
    harness = make_harness(tmp_path, provider)
    first = await run_rollout(harness, seconds=20)
    assert first.phase is RolloutPhase.ROLLED_BACK
    provider.answer(RENDERED, 0.1)
    second = harness.controller.deploy("v2")
    await harness.drive(80)
    final = await asyncio.wait_for(harness.controller.wait(), EVENT_DEADLINE_S)
    assert final is not None and final.id == second.id and final.phase is RolloutPhase.PROMOTED, final


async def test_replay_takes_the_recorded_custom_checks(tmp_path: Path) -> None:
    """`fm replay` cannot query Prometheus as it was: it combines the custom checks' recorded outcomes
    with the judge's replayed checks, so a rollback by a custom check replays to the same decisions."""
    from fridaymorning.controller.replay import replay

    provider = FakeMetricProvider({RENDERED: [0.1, 0.1, 0.1, 0.1, 0.1, 0.9]})
    harness = make_harness(tmp_path, provider)
    final = await run_rollout(harness)
    assert final.phase is RolloutPhase.ROLLED_BACK and final.reason.startswith("latency:")
    decisions = replay(final, harness.states.events(final.id), harness.metrics.query, harness.service)
    assert [d.recorded for d in decisions][-1] == "fail"
    assert decisions and all(decision.same for decision in decisions), decisions
