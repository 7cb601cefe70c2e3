"""Custom checks: the outcome of a check from the measurements of its query so far. Pure, no I/O.

A measurement is one run of the check's query: a number, or an error with its message (HTTP error,
timeout, bad query, no data, NaN). As in Argo Rollouts' `assessMetricStatus`, errors are data: an
error is never a pass, and `consecutive_error_limit` errors in a row fail the check. One number past
the threshold fails it. No measurement yet holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fridaymorning.analysis.verdict import Check, VerdictPhase


@dataclass(frozen=True, slots=True)
class Threshold:
    """Where a check's value fails: above `fail_above`, below `fail_below` (either or both)."""

    fail_above: float | None = None
    fail_below: float | None = None

    def breached_by(self, value: float) -> str:
        """Why `value` fails ('0.82 > 0.5'), or '' when it does not."""
        if self.fail_above is not None and value > self.fail_above:
            return f"{value:.6g} > {self.fail_above:.6g}"
        if self.fail_below is not None and value < self.fail_below:
            return f"{value:.6g} < {self.fail_below:.6g}"
        return ""

    @property
    def shown(self) -> float:
        """The threshold shown beside the statistic: the upper one when there are both."""
        limit = self.fail_above if self.fail_above is not None else self.fail_below
        return math.nan if limit is None else limit


@dataclass(frozen=True, slots=True)
class MetricMeasurement:
    """One run of a check's query at `at` (Unix time): its value, or the error that replaced it."""

    at: float
    value: float = math.nan
    error: str = ""

    @property
    def failed_to_measure(self) -> bool:
        return bool(self.error) or not math.isfinite(self.value)


def consecutive_errors(measurements: Sequence[MetricMeasurement]) -> int:
    """How many of the latest measurements, in a row, are errors."""
    count = 0
    for measurement in reversed(measurements):
        if not measurement.failed_to_measure:
            break
        count += 1
    return count


def assess(
    name: str,
    measurements: Sequence[MetricMeasurement],
    threshold: Threshold,
    consecutive_error_limit: int,
    source: str = "",
) -> Check:
    """The check's outcome from its measurements so far, oldest first: fail, error, hold or pass.

    fail: a value past the threshold, or `consecutive_error_limit` errors in a row; error: the latest
    measurement is an error (fewer in a row than the limit); hold: nothing measured yet; pass: the
    latest measurement is a number within the threshold and none before it failed.
    """
    where = f" ({source})" if source else ""
    total = len(measurements)
    limit = threshold.shown
    for position, measurement in enumerate(measurements, start=1):
        if measurement.failed_to_measure:
            continue
        breach = threshold.breached_by(measurement.value)
        if breach:
            detail = f"measurement {position} of {total}: {breach}{where}"
            return Check(name, VerdictPhase.FAIL, measurement.value, measurement.value, limit, total, detail)
    if not measurements:
        return Check(name, VerdictPhase.HOLD, math.nan, math.nan, limit, 0, f"not measured yet{where}")
    latest = measurements[-1]
    errors = consecutive_errors(measurements)
    if errors:
        message = latest.error or f"the query gave {latest.value}, not a number"
        if errors >= consecutive_error_limit:
            detail = f"{errors} errors in a row (limit {consecutive_error_limit}); last: {message}{where}"
            return Check(name, VerdictPhase.FAIL, math.nan, math.nan, limit, total, detail)
        detail = f"error {errors} of {consecutive_error_limit} in a row: {message}{where}"
        return Check(name, VerdictPhase.ERROR, math.nan, math.nan, limit, total, detail)
    detail = f"{latest.value:.6g} within the threshold after {total} measurement(s){where}"
    return Check(name, VerdictPhase.PASS, latest.value, latest.value, limit, total, detail)
