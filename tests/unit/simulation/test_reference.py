"""The reference judges decide as Flagger's scheduler and Kayenta's NetflixACAJudge do."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.stats import HISTOGRAM_SIZE, index_of_value
from fridaymorning.simulation.reference import (
    FlaggerAnalysis,
    KayentaAnalysis,
    commons_percentile,
    flagger_check,
    hodges_lehmann_interval,
    kayenta_classify,
    prometheus_quantile,
    without_outliers,
)
from fridaymorning.simulation.scenario import Scenario
from fridaymorning.simulation.simulate import DEFAULT_PLAN, run_flagger, run_kayenta


def scenario(**changes: Any) -> Scenario:
    same = {"error_rate": 0.001, "latency_ms": {"p50": 40, "p99": 180}}
    base: dict[str, Any] = {
        "name": "t",
        "duration_s": 900,
        "rps": 200,
        "seed": 1,
        "baseline": same,
        "canary": same,
    }
    return Scenario.model_validate({**base, **changes})


def histogram(values_ms: dict[float, int]) -> np.ndarray:
    """A latency histogram with these counts at these values."""
    counts = np.zeros(HISTOGRAM_SIZE)
    for value, count in values_ms.items():
        counts[index_of_value(value)] += count
    return counts


def test_flagger_rolls_back_at_the_tick_after_the_threshold() -> None:
    """A canary failing every check fails ticks 1-5 and is rolled back at tick 6, 360 s after its start."""
    failing = {"error_rate": 0.5, "latency_ms": {"p50": 40, "p99": 180}}
    result = run_flagger(scenario(canary=failing), DEFAULT_PLAN, Policy(), np.random.default_rng(1), 1.0)
    assert result.outcome == "rolled_back"
    assert result.decision_s == 6 * FlaggerAnalysis().interval_s
    assert "5 failed checks" in result.reason


def test_flagger_promotes_after_passing_at_max_weight() -> None:
    """A healthy canary steps 10, 20, ..., 50% a minute apart and is promoted by the check passed at 50%."""
    result = run_flagger(scenario(), DEFAULT_PLAN, Policy(), np.random.default_rng(1), 1.0)
    assert result.outcome == "promoted" and result.reason.startswith("passed at 50%")
    assert result.decision_s == 5 * FlaggerAnalysis().interval_s


def test_flagger_p99_is_prometheus_interpolation_in_istio_buckets() -> None:
    """histogram_quantile interpolates linearly in the bucket holding the rank, from its lower bound."""
    assert prometheus_quantile(histogram({180.0: 100}), 0.99) == pytest.approx(100 + 150 * 0.99)
    assert prometheus_quantile(histogram({3.0: 50, 700.0: 50}), 0.5) == pytest.approx(5.0)
    assert prometheus_quantile(histogram({700.0: 10}), 0.99, (1.0, 5.0, 500.0)) == 500.0  # +Inf: last bound
    assert math.isnan(prometheus_quantile(np.zeros(HISTOGRAM_SIZE), 0.99))


def test_flagger_check_thresholds() -> None:
    """Success rate below 99% or p99 above 500 ms fails a check; no traffic fails it too."""
    analysis = FlaggerAnalysis()
    assert flagger_check(analysis, 1000, 5, histogram({40.0: 1000}))[0]
    assert not flagger_check(analysis, 1000, 20, histogram({40.0: 1000}))[0]
    assert not flagger_check(analysis, 1000, 0, histogram({40.0: 900, 900.0: 100}))[0]
    assert not flagger_check(analysis, 0, 0, np.zeros(HISTOGRAM_SIZE))[0]


def test_commons_percentile_estimate() -> None:
    """Percentiles as Apache Commons Math estimates them: position p(n+1)/100, clamped to the ends."""
    values = np.arange(1.0, 11.0)
    assert commons_percentile(values, 25) == pytest.approx(2.75)
    assert commons_percentile(values, 50) == pytest.approx(5.5)
    assert commons_percentile(values, 1) == 1.0 and commons_percentile(values, 99) == 10.0


def test_outliers_beyond_three_iqr_and_the_extreme_percentiles_are_removed() -> None:
    """A far value goes; the bulk stays."""
    values = np.concatenate((np.linspace(10, 20, 99), [1000.0]))
    kept = without_outliers(values, 3.0)
    assert len(kept) == 99 and kept.max() == 20.0


def literal_root(canary: np.ndarray, baseline: np.ndarray, quantile: float) -> float:
    """The R/Kayenta root read literally: bisect the standardised rank sum of (canary - mu) vs baseline."""
    from scipy.stats import rankdata

    n_x, n_y = len(canary), len(baseline)

    def f(mu: float) -> float:
        combined = np.concatenate((canary - mu, baseline))
        ranks = rankdata(combined)
        _, ties = np.unique(combined, return_counts=True)
        dz = ranks[:n_x].sum() - n_x * (n_x + 1) / 2 - n_x * n_y / 2
        sigma = math.sqrt(
            n_x * n_y / 12 * ((n_x + n_y + 1) - np.sum(ties**3 - ties) / ((n_x + n_y) * (n_x + n_y - 1)))
        )
        return float((dz - np.sign(dz) * 0.5) / sigma - quantile)

    low, high = float(canary.min() - baseline.max()), float(canary.max() - baseline.min())
    if f(low) <= 0:
        return low
    if f(high) >= 0:
        return high
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if f(middle) > 0 else (low, middle)
    return (low + high) / 2


@pytest.mark.parametrize("seed", range(6))
def test_hodges_lehmann_interval_is_the_literal_root(seed: int) -> None:
    """The step-function roots equal a bisection of the literal statistic, ties (binned values) included."""
    from scipy.stats import norm

    rng = np.random.default_rng(seed)
    canary = np.round(rng.lognormal(3.7, 0.3, 40 + seed), 1 if seed % 2 else 0)
    baseline = np.round(rng.lognormal(3.6, 0.3, 50), 1 if seed % 2 else 0)
    z = float(norm.ppf(0.99))
    lower, estimate, upper = hodges_lehmann_interval(canary, baseline, 0.98)
    assert lower == pytest.approx(literal_root(canary, baseline, z), abs=1e-6)
    assert estimate == pytest.approx(literal_root(canary, baseline, 0.0), abs=1e-6)
    assert upper == pytest.approx(literal_root(canary, baseline, -z), abs=1e-6)
    assert lower <= estimate <= upper


def test_kayenta_classifies_a_clear_increase_high_and_noise_pass() -> None:
    """A 30% higher metric is High; the same distribution passes; a lower one passes (direction: increase)."""
    rng = np.random.default_rng(3)
    analysis = KayentaAnalysis()
    baseline = rng.normal(100, 10, 60)
    assert kayenta_classify(analysis, rng.normal(130, 10, 60), baseline) == "high"
    assert kayenta_classify(analysis, rng.normal(100, 10, 60), baseline) == "pass"
    assert kayenta_classify(analysis, rng.normal(70, 10, 60), baseline) == "pass"
    assert kayenta_classify(analysis, np.full(60, np.nan), baseline) == "nodata"
    assert kayenta_classify(analysis, np.zeros(60), np.zeros(60)) == "pass"


def test_kayenta_effect_size_floor() -> None:
    """A significant increase smaller than allowedIncrease passes."""
    rng = np.random.default_rng(4)
    baseline = rng.normal(100, 2, 60)
    canary = rng.normal(105, 2, 60)
    assert kayenta_classify(KayentaAnalysis(), canary, baseline) == "high"
    assert kayenta_classify(KayentaAnalysis(allowed_increase=1.1), canary, baseline) == "pass"


def test_kayenta_rolls_back_errors_and_promotes_identical() -> None:
    """Kayenta rolls back 5% errors at the first interval's end and promotes an identical canary."""
    failing = {"error_rate": 0.05, "latency_ms": {"p50": 40, "p99": 180}}
    bad = run_kayenta(
        scenario(canary=failing, rps=1000), DEFAULT_PLAN, Policy(), np.random.default_rng(2), 1.0
    )
    assert bad.outcome == "rolled_back" and bad.decision_s == KayentaAnalysis().interval_s
    good = run_kayenta(scenario(rps=1000), DEFAULT_PLAN, Policy(), np.random.default_rng(2), 1.0)
    assert good.outcome == "promoted"
