"""`fm simulate`'s harness: same decision function as the controller, scenario files, outcomes per judge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fridaymorning.analysis.policy import Policy
from fridaymorning.controller import loop, strategy
from fridaymorning.errors import ConfigError
from fridaymorning.simulation import simulate as simulate_module
from fridaymorning.simulation.scenario import Scenario, load_scenario, parse_scenario
from fridaymorning.simulation.simulate import DEFAULT_PLAN, JUDGES, run_fm, simulate
from fridaymorning.simulation.traffic import TrafficStream

SCENARIOS = Path(__file__).parents[3] / "bench" / "scenarios"


def scenario(**changes: object) -> Scenario:
    base = {
        "name": "test",
        "duration_s": 400,
        "rps": 1000,
        "seed": 1,
        "baseline": {"error_rate": 0.001, "latency_ms": {"p50": 40, "p99": 180}},
        "canary": {"error_rate": 0.001, "latency_ms": {"p50": 40, "p99": 180}},
    }
    return Scenario.model_validate({**base, **changes})


def test_harness_and_controller_use_the_same_decision_function() -> None:
    """The simulator's next_action is the very function object the live controller loop calls."""
    # The names each module looks up when it decides: its globals.
    assert vars(simulate_module)["next_action"] is strategy.next_action
    assert vars(loop)["next_action"] is strategy.next_action


def test_every_simulated_tick_goes_through_next_action(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replacing next_action in the harness changes its decisions: there is no second decision path."""
    calls = []

    def spy(*args: object, **kwargs: object) -> strategy.Action:
        calls.append(args)
        return strategy.Action(strategy.ActionKind.ROLLBACK, "spy says no")

    monkeypatch.setattr(simulate_module, "next_action", spy)
    result = run_fm(scenario(), DEFAULT_PLAN, Policy(), np.random.default_rng(0), 1.0)
    assert result.outcome == "rolled_back" and result.reason == "spy says no"
    assert len(calls) == 1


def test_state_moves_as_the_loop_moves_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """ADVANCE sets step, weight and step_started_at = now; step_requests counts only the current step."""
    seen = []
    real = strategy.next_action

    def recording(state, verdict, now, plan, step_requests):  # type: ignore[no-untyped-def]
        seen.append((state.step_index, state.canary_weight, state.step_started_at, now, step_requests))
        return real(state, verdict, now, plan, step_requests)

    monkeypatch.setattr(simulate_module, "next_action", recording)
    result = run_fm(scenario(), DEFAULT_PLAN, Policy(), np.random.default_rng(1), 1.0)
    assert result.outcome == "promoted"
    steps = sorted({(index, weight) for index, weight, *_ in seen})
    assert steps == [(0, 10), (1, 25), (2, 50)]
    for index, _, started, now, step_requests in seen:
        if index > 0 and now == started + 1:
            assert step_requests == 0  # the second the weight moved is not complete yet


SHORT_PLAN = strategy.Plan(
    (
        strategy.Step(weight=20, min_duration_s=10, max_duration_s=40, min_requests=300),
        strategy.Step(weight=60, min_duration_s=5, max_duration_s=40, min_requests=100),
    ),
    "rollback",
)


@pytest.mark.parametrize(
    ("changes", "plan"),
    [
        ({}, DEFAULT_PLAN),
        ({"canary": {"error_rate": 0.05, "latency_ms": {"p50": 40, "p99": 180}}}, DEFAULT_PLAN),
        ({"canary": {"error_rate": 0.001, "latency_ms": {"p50": 40, "p99": 225}}}, DEFAULT_PLAN),
        ({"rps": 3}, DEFAULT_PLAN),
        ({"rps": 50, "lateness_s": 2}, SHORT_PLAN),
        ({"rps": [[0, 200], [30, 0], [60, 400]]}, SHORT_PLAN),
        ({"changes": [{"at_s": 60, "version": "canary", "error_rate": 0.03}]}, SHORT_PLAN),
        (
            {"changes": [{"at_s": 20, "version": "canary", "latency_ms": {"p50": 45, "p99": 400}}]},
            DEFAULT_PLAN,
        ),
    ],
)
def test_skipping_verdicts_decides_as_judging_every_tick(
    changes: dict[str, object], plan: strategy.Plan
) -> None:
    """run_fm builds the verdict only when it can matter; it ends every run exactly as judging every tick."""
    for seed in range(4):
        skipping = run_fm(scenario(**changes), plan, Policy(), np.random.default_rng(seed), 1.0)
        every = run_fm(scenario(**changes), plan, Policy(), np.random.default_rng(seed), 1.0, every_tick=True)
        assert skipping == every


def test_traffic_cumulative_histograms_are_the_histograms_summed() -> None:
    """The cumulative histograms the stream hands Evidence.add are np.cumsum of its histograms."""
    traffic = TrafficStream(
        scenario(changes=[{"at_s": 30, "version": "canary", "error_rate": 0.2}]), np.random.default_rng(5)
    )
    traffic.set_weight(10, 1)
    traffic.set_weight(50, 40)
    for second in range(1, 120):
        for arm in traffic.second(second):
            assert arm.histogram is not None and arm.cumulative is not None
            assert np.array_equal(arm.cumulative, np.cumsum(arm.histogram))
            assert arm.cumulative[-1] == arm.requests


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"canary": {"error_rate": 0.05, "latency_ms": {"p50": 40, "p99": 180}}}, "rolled_back"),
        ({}, "promoted"),
        ({"rps": 0}, "undecided"),
    ],
)
def test_fm_outcomes(changes: dict[str, object], expected: str) -> None:
    """A failing canary is rolled back, an identical one promoted, one without traffic never decided."""
    summary = simulate(scenario(**changes), runs=3, workers=1)
    assert summary["outcomes"][expected] == 3


@pytest.mark.parametrize("judge", JUDGES)
def test_every_judge_rolls_back_five_percent_errors(judge: str) -> None:
    """All three judges eventually catch 5% errors; the summary has the documented JSON shape."""
    summary = simulate(
        scenario(canary={"error_rate": 0.05, "latency_ms": {"p50": 40, "p99": 180}}),
        runs=2,
        judge=judge,  # type: ignore[arg-type]
        workers=1,
    )
    assert summary["outcomes"] == {"promoted": 0, "rolled_back": 2, "undecided": 0}
    assert set(summary) == {
        "scenario",
        "judge",
        "runs",
        "outcomes",
        "decision_s",
        "bad_requests",
        "excess_bad_requests",
    }
    assert set(summary["decision_s"]) == {"p50", "p95", "max"}


def test_unknown_judge_lists_the_valid_ones() -> None:
    """An unknown judge name is refused with the list of valid names."""
    with pytest.raises(ValueError, match="fm, flagger, kayenta"):
        simulate(scenario(), runs=1, judge="argo")  # type: ignore[arg-type]


def test_bench_scenarios_load() -> None:
    """Every scenario shipped with the benchmark is valid."""
    files = sorted(SCENARIOS.glob("*.yaml"))
    assert files
    for file in files:
        assert load_scenario(file).name == file.stem


def test_scenario_errors_name_file_line_and_field(tmp_path: Path) -> None:
    """A bad field is reported with the file, its line and the field's path."""
    text = "name: x\nduration_s: 10\nrps: 5\nbaseline:\n  error_rate: 2\n  latency_ms: {p50: 1, p99: 2}\n"
    with pytest.raises(ConfigError, match=r"bad\.yaml:5: baseline\.error_rate"):
        parse_scenario(text, "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")


def test_changes_apply_from_their_second() -> None:
    """A change alters one version from at_s on, keeping the fields it does not give."""
    changed = scenario(changes=[{"at_s": 100, "version": "canary", "error_rate": 0.02}])
    assert changed.behaviour_at("canary", 99).error_rate == 0.001
    assert changed.behaviour_at("canary", 100).error_rate == 0.02
    assert changed.behaviour_at("canary", 100).latency_ms.p99 == 180
    assert changed.behaviour_at("baseline", 200).error_rate == 0.001
    stepped = scenario(rps=[[0, 10], [60, 500]])
    assert (stepped.rps_at(59), stepped.rps_at(60)) == (10, 500)
