"""A custom check's outcome from its measurements: a pure function, pinned down by a table."""

from __future__ import annotations

import math

import pytest

from fridaymorning.analysis.custom import MetricMeasurement, Threshold, assess, consecutive_errors
from fridaymorning.analysis.verdict import VerdictPhase

PASS, FAIL, HOLD, ERROR = VerdictPhase.PASS, VerdictPhase.FAIL, VerdictPhase.HOLD, VerdictPhase.ERROR


def ok(value: float) -> MetricMeasurement:
    return MetricMeasurement(0.0, value=value)


def err(message: str = "HTTP 400: parse error") -> MetricMeasurement:
    return MetricMeasurement(0.0, error=message)


ABOVE = Threshold(fail_above=0.5)
BELOW = Threshold(fail_below=0.9)
RANGE = Threshold(fail_above=2.0, fail_below=1.0)


@pytest.mark.parametrize(
    ("measurements", "threshold", "limit", "phase", "detail"),
    [
        ([], ABOVE, 4, HOLD, "not measured yet"),
        ([ok(0.1)], ABOVE, 4, PASS, "0.1 within the threshold after 1 measurement"),
        ([ok(0.5)], ABOVE, 4, PASS, "within the threshold"),  # at the threshold is not past it
        ([ok(0.51)], ABOVE, 4, FAIL, "measurement 1 of 1: 0.51 > 0.5"),
        ([ok(0.1), ok(0.7), ok(0.1)], ABOVE, 4, FAIL, "measurement 2 of 3: 0.7 > 0.5"),
        ([ok(0.95)], BELOW, 4, PASS, "within"),
        ([ok(0.85)], BELOW, 4, FAIL, "0.85 < 0.9"),
        ([ok(1.5)], RANGE, 4, PASS, "within"),
        ([ok(2.5)], RANGE, 4, FAIL, "2.5 > 2"),
        ([ok(0.5)], RANGE, 4, FAIL, "0.5 < 1"),
        ([err()], ABOVE, 4, ERROR, "error 1 of 4 in a row: HTTP 400: parse error"),
        ([ok(0.1), err()], ABOVE, 4, ERROR, "error 1 of 4"),
        ([err(), err(), err()], ABOVE, 4, ERROR, "error 3 of 4"),
        ([err(), err(), err(), err("timeout")], ABOVE, 4, FAIL, "4 errors in a row (limit 4); last: timeout"),
        ([err(), err(), ok(0.1), err()], ABOVE, 4, ERROR, "error 1 of 4"),  # a number resets the run
        ([err(), err(), err(), ok(0.1)], ABOVE, 4, PASS, "within"),
        ([err()], ABOVE, 1, FAIL, "1 errors in a row (limit 1)"),
        ([MetricMeasurement(0.0, value=math.nan)], ABOVE, 4, ERROR, "gave nan, not a number"),
        ([ok(0.9), err(), err(), err(), err()], ABOVE, 4, FAIL, "measurement 1 of 5: 0.9 > 0.5"),
    ],
)
def test_assess(
    measurements: list[MetricMeasurement], threshold: Threshold, limit: int, phase: VerdictPhase, detail: str
) -> None:
    """Each history of measurements gives one outcome: a value past the threshold fails, the limit of
    errors in a row fails, an error below the limit errs, nothing measured holds, else it passes."""
    check = assess("latency", measurements, threshold, limit, "prometheus://127.0.0.1:9090")
    assert check.phase is phase
    assert detail in check.detail
    assert check.detail.endswith("(prometheus://127.0.0.1:9090)")
    assert check.n == len(measurements)
    assert check.name == "latency"


def test_an_error_is_never_a_pass() -> None:
    """However many numbers passed before, a history ending in an error is not a pass."""
    history = [ok(0.1)] * 50 + [err()]
    for limit in (1, 2, 4, 100):
        assert assess("c", history, ABOVE, limit).phase in (ERROR, FAIL)


def test_statistic_and_threshold_are_shown() -> None:
    """The check shows the value it judged and its threshold (NaN when there is no value)."""
    passed = assess("c", [ok(0.25)], ABOVE, 4)
    assert (passed.statistic, passed.threshold) == (0.25, 0.5)
    errored = assess("c", [err()], BELOW, 4)
    assert math.isnan(errored.statistic) and errored.threshold == 0.9


@pytest.mark.parametrize(
    ("measurements", "count"),
    [([], 0), ([ok(1)], 0), ([err()], 1), ([ok(1), err(), err()], 2), ([err(), ok(1)], 0)],
)
def test_consecutive_errors(measurements: list[MetricMeasurement], count: int) -> None:
    """Only the errors at the end, in a row, count."""
    assert consecutive_errors(measurements) == count
