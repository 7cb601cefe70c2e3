"""The CLI's views render any verdict: None, NaN and infinite statistics, empty checks, huge numbers,
and text that looks like rich markup, in the live view of `deploy --wait`/`watch`, `status`,
`explain` and `history`."""

from __future__ import annotations

import io
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.views import (
    checks_table,
    count,
    explain_view,
    history_table,
    number,
    rollout_view,
    share,
    status_view,
)

# What a number in the API's JSON (None for NaN) or in the state store (NaN kept) can be.
numbers = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0]),
)
# Text from outside: reasons, details, names; markup-looking on purpose.
texts = st.one_of(st.text(max_size=40), st.sampled_from(["[/]", "[bold]x", "[red]", "]", "n=254 [x]"]))
phases = st.one_of(st.sampled_from(["pass", "fail", "hold", "error"]), texts)

checks = st.fixed_dictionaries(
    {
        "name": texts,
        "phase": phases,
        "statistic": numbers,
        "bound": numbers,
        "threshold": numbers,
        "n": numbers,
        "detail": texts,
    },
    optional={"evalue": numbers, "evalue_threshold": numbers},
)
verdicts = st.fixed_dictionaries(
    {"phase": phases, "reason": texts, "checks": st.lists(checks, max_size=6)},
    optional={
        "window": st.one_of(st.none(), st.fixed_dictionaries({"start": numbers, "end": numbers})),
        "step_requests": numbers,
    },
)
events = st.fixed_dictionaries(
    {
        "at": numbers,
        "kind": texts,
        "phase": phases,
        "step_index": st.integers(0, 10),
        "canary_weight": numbers,
        "reason": texts,
        "verdict": st.one_of(st.none(), verdicts),
    }
)
rollouts = st.fixed_dictionaries(
    {
        "id": st.integers(1, 2**63 - 1),
        "service": texts,
        "version": texts,
        "baseline": texts,
        "phase": phases,
        "step": st.integers(1, 10),
        "canary_weight": numbers,
        "started_at": numbers,
        "finished_at": numbers,
        "reason": texts,
        "events": st.lists(events, max_size=5),
    }
)
version_stats = st.fixed_dictionaries(
    {
        "version": texts,
        "requests": numbers,
        "failed": numbers,
        "latency_ms": st.fixed_dictionaries({"p50": numbers, "p90": numbers, "p99": numbers}),
    }
)
states = st.builds(
    RolloutState,
    id=st.integers(1, 2**63 - 1),
    service=texts,
    version=texts,
    baseline=texts,
    phase=st.sampled_from(list(RolloutPhase)),
    step_index=st.integers(0, 10),
    canary_weight=st.integers(0, 100),
    started_at=st.floats(allow_nan=True, allow_infinity=True),
    step_started_at=st.floats(allow_nan=True, allow_infinity=True),
    finished_at=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    reason=texts,
)


def rendered(renderable: Any, width: int = 100) -> str:
    """The text a terminal `width` columns wide would show."""
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, force_terminal=False).print(renderable)
    return out.getvalue()


RENDER = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RENDER
@given(rollout=rollouts, stats=st.lists(version_stats, max_size=3))
def test_live_view_renders_any_rollout(rollout: dict[str, Any], stats: list[dict[str, Any]]) -> None:
    """The live view of `deploy --wait` and `watch` renders whatever the API returns, and shows the
    latest verdict's checks by name."""
    text = rendered(rollout_view(rollout, stats))
    judged = [event["verdict"] for event in rollout["events"] if event["verdict"]]
    if judged and judged[-1]["checks"]:
        assert "canary n" in text


@RENDER
@given(verdict=verdicts, rollout=rollouts)
def test_status_renders_any_verdict(verdict: dict[str, Any], rollout: dict[str, Any]) -> None:
    """`fm status` renders the running rollout's verdict, whatever its numbers, or says it has none yet."""
    services = [
        {"service": "web", "stable": "v1", "config_stable": "v1", "rollout": rollout, "verdict": verdict},
        {"service": "api", "stable": "v2", "config_stable": "v1", "rollout": rollout, "verdict": None},
        {"service": "idle", "stable": "v1", "rollout": None, "verdict": None},
    ]
    text = rendered(status_view({"services": services, "collector": {}}), width=2000)
    assert "no verdict yet" in text
    assert "the state store wins" in text


@RENDER
@given(state=states, history=st.lists(events, max_size=6))
def test_explain_renders_any_event(state: RolloutState, history: list[dict[str, Any]]) -> None:
    """`fm explain` renders every event with its verdict, whatever the numbers in it."""
    text = rendered(explain_view(state, history))
    assert f"rollout {state.id}" in text


@RENDER
@given(history=st.lists(states, max_size=6))
def test_history_renders_any_rollout(history: list[RolloutState]) -> None:
    """`fm history` renders rollouts whose times are missing, infinite or out of range."""
    text = rendered(history_table(history))
    assert all(str(state.id)[:5] in text for state in history)


def test_checks_table_labels_n_with_the_canary_and_missing_numbers_with_a_dash() -> None:
    """A check the judge could not compute (None from the API, NaN from the store) shows '-', an
    infinite bound '∞', and the n column says it counts the canary."""
    verdict = {
        "phase": "hold",
        "reason": "p99_slo: no canary latencies yet",
        "checks": [
            {"name": "p99_slo", "phase": "hold", "statistic": None, "bound": None, "threshold": 1000.0,
             "n": 0, "detail": "no canary latencies yet"},
            {"name": "p99_vs_baseline", "phase": "hold", "statistic": math.nan, "bound": math.inf,
             "threshold": 1.25, "n": 102, "detail": "[bold]x"},
        ],
    }  # fmt: skip
    text = rendered(checks_table(verdict))
    assert "canary n" in text and "102" in text
    assert "∞" in text and "[bold]x" in text
    assert "nan" not in text.lower().replace("canary", "")


def test_number_formats() -> None:
    """The formatter for optional numbers: missing and NaN are '-', sizes beyond a float are kept."""
    assert number(None) == "-" and number(math.nan) == "-"
    assert number(math.inf) == "∞" and number(-math.inf) == "-∞"
    assert number(1234.5678) == "1235" and number(10**400) == "1.000e+400"
    assert count(254) == "254" and count(None) == "-"
    assert share(1, 4) == "25.00%" and share(1, 0) == "-" and share(None, 3) == "-"


def test_error_comparison_detail_names_the_version_of_each_n() -> None:
    """The error-rate comparison's detail gives each version's own request count beside it, so the
    baseline's n is never read as the canary's."""
    from fridaymorning.analysis.judge import judge
    from fridaymorning.analysis.policy import AnalysisConfig
    from fridaymorning.testing import synthetic_window

    canary = [synthetic_window("web", "v2", 1, 102)]
    baseline = [synthetic_window("web", "v1", 1, 254)]
    verdict = judge(canary, baseline, AnalysisConfig())
    (check,) = [check for check in verdict.checks if check.name == "error_rate_vs_baseline"]
    assert "canary 0.00% of n=102" in check.detail and "baseline 0.00% of n=254" in check.detail
    assert check.n == 102


def test_fm_status_names_each_instance_of_a_fleet_and_why_one_lags() -> None:
    """One line per HAProxy instance: in sync, or LAGGING with the reason."""
    from fridaymorning.views import fleet_lines

    lines = fleet_lines(
        [
            {"name": "lb1", "admin": "ipv4@10.0.0.2:9999", "managed": False, "state": "in_sync"},
            {
                "name": "lb2",
                "admin": "/run/lb2.sock",
                "managed": True,
                "state": "lagging",
                "reason": "connection refused",
                "lagging_since": None,
            },
        ]
    )
    assert lines == [
        "haproxy lb1 (brought, ipv4@10.0.0.2:9999): in sync",
        "haproxy lb2 (managed, /run/lb2.sock): LAGGING: connection refused",
    ]
