"""Scenario keys that bring production's conditions into `fm simulate`, and the traffic they draw.

Timer resolution, collector lateness, shared incidents, cold starts, heterogeneous and sticky clients,
and server timeouts logged late.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.stats import index_of_value, lognormal_parameters
from fridaymorning.config import CollectorConfig
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.controller.planner import judged_seconds
from fridaymorning.errors import ConfigError
from fridaymorning.router._render import render_defaults
from fridaymorning.simulation.scenario import (
    COLLECTOR_LATENESS_S,
    HAPROXY_TIMEOUT_SERVER_S,
    Scenario,
    load_scenario,
)
from fridaymorning.simulation.simulate import DEFAULT_PLAN, run_fm
from fridaymorning.simulation.traffic import TrafficStream, latency_support

SCENARIOS = Path(__file__).parents[3] / "bench" / "scenarios"
SAME = {"error_rate": 0.001, "latency_ms": {"p50": 40, "p99": 180}}


def scenario(**changes: Any) -> Scenario:
    base: dict[str, Any] = {
        "name": "test",
        "duration_s": 300,
        "rps": 1000,
        "seed": 1,
        "baseline": SAME,
        "canary": SAME,
    }
    return Scenario.model_validate({**base, **changes})


def drawn(traffic: TrafficStream, seconds: range) -> tuple[list[Any], list[Any]]:
    """The canary's and the baseline's ArmSeconds of these seconds, as the judge reads them."""
    pairs = [traffic.second(second) for second in seconds]
    return [pair[0] for pair in pairs], [pair[1] for pair in pairs]


def test_defaults_are_production_settings() -> None:
    """Lateness is the collector's default, the timeout HAProxy's `timeout server`, Tr whole milliseconds."""
    defaults = scenario()
    assert defaults.lateness_s == COLLECTOR_LATENESS_S == CollectorConfig().lateness_s
    assert f"timeout server {HAPROXY_TIMEOUT_SERVER_S:g}s" in render_defaults()
    assert defaults.timeout_s == HAPROXY_TIMEOUT_SERVER_S
    assert defaults.latency_resolution_ms == 1.0
    assert defaults.incidents == [] and defaults.clients is None
    assert defaults.canary.cold_start is None and defaults.canary.timeout_rate == 0.0


def test_data_lag_is_the_controllers() -> None:
    """A simulated tick judges exactly the seconds the controller loop would, with runtime's data lag."""
    lag = scenario().data_lag_s
    state = RolloutState(1, "s", "v2", "v1", RolloutPhase.PROGRESSING, 0, 10, 0.0, 1.0)
    for now in (3.0, 7.5, 12.0):
        assert judged_seconds(state, now, COLLECTOR_LATENESS_S + 1.0)[1] == math.floor(now - lag)


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        (
            "canary:\n  error_rate: 0.1\n  latency_ms: {p50: 1, p99: 2}\n"
            "  cold_start: {duration_s: 3, factor: 2}\n",
            4,
            "canary.cold_start.factor",
        ),
        (
            "incidents:\n  - {at_s: 1, duration_s: 2}\n  - {at_s: 5, duration_s: 2, error: 0.3}\n",
            3,
            "incidents[1].error",
        ),
        (
            "clients:\n  count: 10\n  groups:\n    - {share: 0.5, errors: 0.2}\n",
            4,
            "clients.groups[0].errors",
        ),
        ("clients:\n  count: 10\n  stickey: true\n", 3, "clients.stickey"),
        ("clients:\n  count: 10\n  groups:\n    - {share: 0.7}\n    - {share: 0.5}\n", 1, "clients"),
        ("incidents:\n  - {at_s: 1, duration_s: 0}\n", 2, "incidents[0].duration_s"),
        ("latency_resolution_ms: -1\n", 1, "latency_resolution_ms"),
    ],
)
def test_bad_keys_name_file_line_and_field(tmp_path: Path, text: str, line: int, field: str) -> None:
    """Unknown or invalid reality keys are config errors with the file, the line and the field."""
    base = "name: x\nduration_s: 10\nrps: 1\nbaseline: {error_rate: 0, latency_ms: {p50: 1, p99: 2}}\n"
    if not text.startswith("canary"):
        base += "canary: {error_rate: 0, latency_ms: {p50: 1, p99: 2}}\n"
    path = tmp_path / "bad.yaml"
    path.write_text(base + text)
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert caught.value.path == str(path)
    assert caught.value.line == base.count("\n") + line
    assert field in str(caught.value)


def test_latencies_are_floored_to_whole_milliseconds_then_binned() -> None:
    """At 1 ms resolution the bins hold exactly the floored lognormal: P(k ms) lands in k's DDSketch bin."""
    from scipy.stats import norm

    low, probabilities, timeout = latency_support(0.8, 4.0, 1.0, 1.0, 30_000.0)
    mu, sigma = lognormal_parameters(0.8, 4.0)
    expected: dict[int, float] = {}
    for k in range(0, 400):
        mass = norm.cdf((math.log(k + 1) - mu) / sigma) - (norm.cdf((math.log(k) - mu) / sigma) if k else 0.0)
        expected[index_of_value(float(k))] = expected.get(index_of_value(float(k)), 0.0) + mass
    got = {low + i: float(p) for i, p in enumerate(probabilities) if p > 0}
    assert {index for index, mass in expected.items() if mass > 1e-9} <= set(got)
    for index in got.keys() | expected.keys():
        assert got.get(index, 0.0) == pytest.approx(expected.get(index, 0.0), abs=1e-9)
    assert all(index == 0 or index >= index_of_value(1.0) for index in got)  # nothing between 0 and 1 ms
    assert timeout < 1e-30


def test_continuous_latencies_without_resolution() -> None:
    """Resolution 0 keeps latencies continuous: sub-millisecond values spread over many bins, none at 0."""
    low, probabilities, _ = latency_support(0.3, 1.5, 1.0, 0.0, 30_000.0)
    assert low > 0 and np.count_nonzero(probabilities > 1e-6) > 50


def test_slow_requests_beyond_the_server_timeout_time_out() -> None:
    """A latency at or over timeout_s is a timeout: its chance is the lognormal's tail there."""
    _, _, timeout = latency_support(40.0, 180.0, 300.0, 1.0, 30_000.0)
    from scipy.stats import norm

    mu, sigma = lognormal_parameters(40.0, 180.0)
    assert timeout == pytest.approx(float(norm.sf((math.log(30_000.0) - mu - math.log(300.0)) / sigma)))
    assert 0.05 < timeout < 0.95


def test_timeouts_reach_the_judge_timeout_s_late_without_latency() -> None:
    """A request that never answers fails, has no Tr, and shows up in the second it is logged."""
    hung = {**SAME, "timeout_rate": 1.0}
    traffic = TrafficStream(scenario(canary=hung, timeout_s=10, duration_s=40), np.random.default_rng(1))
    traffic.set_weight(50, 1)
    canary, baseline = drawn(traffic, range(0, 40))
    assert all(arm.requests == 0 for arm in canary[:11])  # nothing logged before the first timeout
    for second in range(11, 40):
        arm = canary[second]
        assert arm.requests == arm.failed == traffic.canary_requests[second - 10] > 0
        assert arm.histogram is None
    assert all(arm.histogram is not None for arm in baseline)
    # The accounting counts every hung request as bad in the second it began.
    assert np.array_equal(traffic.canary_failed, traffic.canary_requests)


def test_an_incident_hits_both_versions() -> None:
    """During an incident both versions fail its error rate more and are its latency factor slower."""
    incident = {"at_s": 20, "duration_s": 10, "error_rate": 0.3, "latency_factor": 3}
    traffic = TrafficStream(scenario(incidents=[incident], duration_s=60), np.random.default_rng(2))
    traffic.set_weight(50, 1)
    canary, baseline = drawn(traffic, range(1, 60))
    for arms in (canary, baseline):
        during = arms[19:29]
        before = arms[:19]
        rate_during = sum(a.failed for a in during) / sum(a.requests for a in during)
        rate_before = sum(a.failed for a in before) / sum(a.requests for a in before)
        assert 0.27 < rate_during < 0.33 and rate_before < 0.01
        assert median_ms(during) == pytest.approx(3 * median_ms(before), rel=0.1)


def median_ms(arms: list[Any]) -> float:
    """The median latency of these seconds together, from their histograms."""
    from fridaymorning.simulation.reference import histogram_quantile

    return histogram_quantile(sum(arm.histogram for arm in arms), 0.5)


def test_a_cold_start_slows_only_the_new_version_for_its_first_seconds() -> None:
    """The canary's cold start slows it from its first traffic for duration_s; the baseline stays warm."""
    cold = {**SAME, "cold_start": {"duration_s": 15, "latency_factor": 4}}
    traffic = TrafficStream(scenario(canary=cold, duration_s=60, startup_s=5), np.random.default_rng(3))
    traffic.set_weight(50, 5)
    canary, baseline = drawn(traffic, range(5, 60))
    assert median_ms(canary[:15]) == pytest.approx(4 * median_ms(canary[15:]), rel=0.1)
    assert median_ms(baseline[:15]) == pytest.approx(median_ms(baseline[15:]), rel=0.1)


def test_client_groups_follow_the_client_to_either_version() -> None:
    """Without stickiness, a failing client group raises both versions' error rates alike."""
    clients = {"count": 1000, "groups": [{"share": 0.2, "error_rate": 0.5}]}
    traffic = TrafficStream(scenario(clients=clients, duration_s=100), np.random.default_rng(4))
    traffic.set_weight(50, 1)
    canary, baseline = drawn(traffic, range(1, 100))
    for arms in (canary, baseline):
        rate = sum(a.failed for a in arms) / sum(a.requests for a in arms)
        assert rate == pytest.approx(0.2 * 0.5 + 0.001, abs=0.01)


def test_sticky_clients_stay_where_they_were_first_sent() -> None:
    """With sticky clients a later weight change moves only clients not seen yet; each keeps its version."""
    clients = {"count": 200, "sticky": True}
    traffic = TrafficStream(scenario(clients=clients, duration_s=120, rps=400), np.random.default_rng(5))
    traffic.set_weight(30, 0)
    traffic.set_weight(90, 60)  # by then every client (2 req/s each) has been seen many times over
    canary, baseline = drawn(traffic, range(0, 120))
    early = sum(a.requests for a in canary[10:60]) / sum(
        a.requests + b.requests for a, b in zip(canary[10:60], baseline[10:60], strict=True)
    )
    late = sum(a.requests for a in canary[60:]) / sum(
        a.requests + b.requests for a, b in zip(canary[60:], baseline[60:], strict=True)
    )
    assert 0.15 < early < 0.45
    assert late == pytest.approx(early, abs=0.03)


def test_sticky_clients_keep_a_group_on_one_version() -> None:
    """A few sticky failing clients make the versions' error rates differ by the luck of the draw."""
    clients = {"count": 20, "sticky": True, "groups": [{"share": 0.1, "error_rate": 1.0}]}
    spreads = []
    for seed in range(6):
        traffic = TrafficStream(
            scenario(clients=clients, duration_s=60, rps=200), np.random.default_rng(seed)
        )
        traffic.set_weight(50, 0)
        canary, baseline = drawn(traffic, range(0, 60))
        rates = [
            sum(a.failed for a in arms) / max(sum(a.requests for a in arms), 1) for arms in (canary, baseline)
        ]
        spreads.append(abs(rates[0] - rates[1]))
    # Two failing clients, each on one version: the rates often differ by far more than noise.
    assert max(spreads) > 0.1


def test_expected_failures_are_the_baselines_behaviour_on_the_canarys_requests() -> None:
    """Excess bad requests compare with what the baseline's own failure chance would have failed."""
    incident = {"at_s": 10, "duration_s": 10, "error_rate": 0.5}
    traffic = TrafficStream(scenario(incidents=[incident], duration_s=30), np.random.default_rng(6))
    traffic.set_weight(50, 0)
    traffic.draw_until(30)
    during = traffic.canary_expected_failed[10:20] / traffic.canary_requests[10:20]
    before = traffic.canary_expected_failed[:10] / traffic.canary_requests[:10]
    assert np.allclose(during, 1 - 0.999 * 0.5) and np.allclose(before, 0.001)


@pytest.mark.parametrize(
    "changes",
    [
        {"incidents": [{"at_s": 40, "duration_s": 20, "error_rate": 0.3, "latency_factor": 3}]},
        {"canary": {**SAME, "cold_start": {"duration_s": 30, "latency_factor": 3}}},
        {"clients": {"count": 3000, "sticky": True, "groups": [{"share": 0.02, "error_rate": 0.2}]}},
        {"canary": {**SAME, "timeout_rate": 0.02}, "timeout_s": 5},
        {"latency_resolution_ms": 5, "lateness_s": 0},
    ],
)
def test_skipping_verdicts_decides_as_judging_every_tick_in_real_conditions(changes: dict[str, Any]) -> None:
    """run_fm's shortcut stays exact with incidents, cold starts, sticky clients and late timeouts."""
    for seed in range(3):
        skipping = run_fm(scenario(**changes), DEFAULT_PLAN, Policy(), np.random.default_rng(seed), 1.0)
        every = run_fm(
            scenario(**changes), DEFAULT_PLAN, Policy(), np.random.default_rng(seed), 1.0, every_tick=True
        )
        assert skipping == every


def test_every_condition_has_its_identical_and_bad_cases() -> None:
    """Each condition in bench/scenarios has an identical-canary file and the three bad cases."""
    conditions = [
        path.name.removesuffix("-errors-5pct.yaml") for path in SCENARIOS.glob("*-errors-5pct.yaml")
    ]
    assert {"shared-incident", "cold-start", "sticky-clients", "sub-millisecond", "timeouts"} <= set(
        conditions
    )
    for condition in conditions:
        for suffix in ("", "-errors-5pct", "-p99-plus-25", "-plus-40ms"):
            assert load_scenario(SCENARIOS / f"{condition}{suffix}.yaml").name == f"{condition}{suffix}"
