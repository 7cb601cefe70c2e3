"""The judge's running evidence: counts, latency histograms and e-processes, folded one second at a time.

`Evidence.add` is the only place a second of traffic enters the statistics. The judge folds the stored
windows through it from the first second on every call; the simulator folds its generated seconds
through it as they happen. Both then ask `judge.verdict_of` for the verdict (the simulator asks
`judge.fails` first, the failing side of the same checks, and builds the verdict only when it can change
the decision), so both decide identically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ddsketch import DDSketch

from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.stats import (
    HISTOGRAM_SIZE,
    FloatArray,
    index_shift,
    key_index,
    log_evalue_bounds,
    log_evalues,
    new_count_eprocesses,
    update_count_eprocesses,
)
from fridaymorning.models import Window


@dataclass(frozen=True, slots=True)
class ArmSecond:
    """One second of one version: requests, failed requests, and the histogram of their Tr (or None)."""

    requests: int
    failed: int
    histogram: FloatArray | None = None
    # np.cumsum(histogram), when the producer has it already (the simulator sums a chunk of seconds at once)
    cumulative: FloatArray | None = None

    def cumulative_histogram(self) -> FloatArray | None:
        """The histogram as cumulative counts (entry i: requests in bins 0..i); None without latencies."""
        if self.cumulative is not None:
            return self.cumulative
        return None if self.histogram is None else np.cumsum(self.histogram)


EMPTY_SECOND = ArmSecond(0, 0, None)


def histogram_of(sketch: DDSketch) -> FloatArray | None:
    """A DDSketch's bin counts on the judge's fixed histogram (see stats.KEY_LOW); None when empty.

    Reads the sketch's private stores, as fridaymorning.sketches does; a unit test pins the equivalence.
    """
    if not sketch.count:
        return None
    histogram = np.zeros(HISTOGRAM_SIZE)
    store = sketch._store
    if store.count:
        first = store.min_key - store.offset
        counts = np.asarray(store.bins[first : store.max_key - store.offset + 1], dtype=np.float64)
        low, high = key_index(store.min_key), key_index(store.max_key)
        if high - low + 1 == len(counts):
            histogram[low : high + 1] += counts
        else:  # keys beyond the histogram's range are clamped into its end bins
            indexes = [key_index(key) for key in range(store.min_key, store.max_key + 1)]
            np.add.at(histogram, indexes, counts)
    histogram[0] += sketch._zero_count + sketch._negative_store.count
    return histogram


def arm_second(window: Window) -> ArmSecond:
    """A stored window as the judge reads it."""
    return ArmSecond(window.requests, window.failed, histogram_of(window.tr))


class Evidence:
    """Everything the judge knows after some seconds of a rollout, updated one second at a time.

    Holds the totals of both versions, their merged latency histograms (as cumulative counts: entry i
    counts the requests in bins 0..i), the count e-processes (row 0 of `log_ratios`: errors; row 1 + k:
    latency at the k-th compared quantile) and the running maximum of each (`log_e`), since the
    controller may skip seconds between looks and a crossing must not be missed. All the e-processes of a
    second are updated in one array operation: a second costs the same however many quantiles are compared.
    """

    __slots__ = (
        "_canary_shift",
        "baseline_cumulative",
        "baseline_failed",
        "baseline_requests",
        "canary_cumulative",
        "canary_failed",
        "canary_requests",
        "latency_thresholds",
        "log_e",
        "log_ratios",
        "quantiles",
        "seconds",
    )

    def __init__(self, policy: Policy) -> None:
        self.quantiles = np.asarray(policy.quantiles, dtype=np.float64)
        self._canary_shift = index_shift(policy.latency_fail_ratio)
        self.seconds = 0
        self.canary_requests = self.canary_failed = 0
        self.baseline_requests = self.baseline_failed = 0
        self.canary_cumulative = np.zeros(HISTOGRAM_SIZE)
        self.baseline_cumulative = np.zeros(HISTOGRAM_SIZE)
        self.log_ratios = new_count_eprocesses(1 + len(policy.quantiles))
        self.log_e = [0.0] * (1 + len(policy.quantiles))
        # Histogram index of the baseline's quantile each latency test last compared against (-1: none yet).
        self.latency_thresholds = [-1 for _ in policy.quantiles]

    def add(self, canary: ArmSecond, baseline: ArmSecond) -> None:
        """Fold one second of both versions into the evidence."""
        self.seconds += 1
        rows = len(self.log_e)
        canary_events, baseline_events, shares = [0.0] * rows, [0.0] * rows, [0.0] * rows
        if canary.requests > 0 and baseline.requests > 0 and canary.failed + baseline.failed > 0:
            canary_events[0], baseline_events[0] = canary.failed, baseline.failed
            shares[0] = canary.requests / (canary.requests + baseline.requests)
        canary_cumulative = canary.cumulative_histogram()
        baseline_cumulative = baseline.cumulative_histogram()
        if canary_cumulative is not None and baseline_cumulative is not None:
            self._count_slower(canary_cumulative, baseline_cumulative, canary_events, baseline_events, shares)
        # update_count_eprocess skips a test without events or with a one-sided split; so does a zero row.
        updated = [
            row
            for row in range(rows)
            if canary_events[row] + baseline_events[row] > 0 and 0.0 < shares[row] < 1.0
        ]
        if updated:
            if len(updated) < rows:
                canary_events = [canary_events[row] if row in updated else 0.0 for row in range(rows)]
                baseline_events = [baseline_events[row] if row in updated else 0.0 for row in range(rows)]
                shares = [shares[row] if row in updated else 0.0 for row in range(rows)]
            update_count_eprocesses(self.log_ratios, canary_events, baseline_events, shares)
            bounds = log_evalue_bounds(self.log_ratios)
            if any(bounds[row] > self.log_e[row] for row in updated):
                log_e = log_evalues(self.log_ratios)
                for row in updated:
                    self.log_e[row] = max(self.log_e[row], log_e[row])
        self.canary_requests += canary.requests
        self.canary_failed += canary.failed
        self.baseline_requests += baseline.requests
        self.baseline_failed += baseline.failed
        if canary_cumulative is not None:
            self.canary_cumulative += canary_cumulative
        if baseline_cumulative is not None:
            self.baseline_cumulative += baseline_cumulative

    @property
    def canary_latency_count(self) -> float:
        """How many canary requests have a latency."""
        return float(self.canary_cumulative[-1])

    @property
    def baseline_latency_count(self) -> float:
        """How many baseline requests have a latency."""
        return float(self.baseline_cumulative[-1])

    def _count_slower(
        self,
        canary: FloatArray,
        baseline: FloatArray,
        canary_events: list[float],
        baseline_events: list[float],
        shares: list[float],
    ) -> None:
        """This second's requests slower than the baseline's quantiles so far, as events of rows 1, 2, ...

        `canary` and `baseline` are the second's cumulative histograms. The thresholds come from earlier
        seconds only, so they are predictable and each second's factor keeps the e-process a
        supermartingale (see stats.update_count_eprocess).
        """
        earlier = float(self.baseline_cumulative[-1])
        canary_count, baseline_count = float(canary[-1]), float(baseline[-1])
        if earlier <= 0 or canary_count <= 0 or baseline_count <= 0:
            return
        thresholds = np.searchsorted(self.baseline_cumulative, self.quantiles * (earlier - 1.0), side="right")
        share = canary_count / (canary_count + baseline_count)
        last = HISTOGRAM_SIZE - 1
        for position, threshold in enumerate(thresholds.tolist()):
            self.latency_thresholds[position] = threshold
            # Requests in the bins above the threshold's bin: all of them minus those up to it.
            canary_events[1 + position] = canary_count - float(
                canary[min(threshold + self._canary_shift, last)]
            )
            baseline_events[1 + position] = baseline_count - float(baseline[min(threshold, last)])
            shares[1 + position] = share

    @property
    def error_evalue(self) -> float:
        """The running maximum of the error-rate e-process."""
        return math.exp(min(self.log_e[0], 700.0))

    def latency_evalue(self, position: int) -> float:
        """The running maximum of the latency e-process of the quantile at `position`."""
        return math.exp(min(self.log_e[1 + position], 700.0))


def evidence_of(canary: Sequence[Window], baseline: Sequence[Window], policy: Policy) -> Evidence:
    """Fold stored windows into evidence, second by second; a second missing for one version counts as empty.

    Windows of the same version and second (several collectors) are added together.
    """
    canary_seconds = _by_second(canary)
    baseline_seconds = _by_second(baseline)
    evidence = Evidence(policy)
    for second in sorted(canary_seconds.keys() | baseline_seconds.keys()):
        evidence.add(
            canary_seconds.get(second, EMPTY_SECOND),
            baseline_seconds.get(second, EMPTY_SECOND),
        )
    return evidence


def _by_second(windows: Sequence[Window]) -> dict[int, ArmSecond]:
    seconds: dict[int, ArmSecond] = {}
    for window in windows:
        second = arm_second(window)
        earlier = seconds.get(window.second)
        if earlier is not None:
            second = _sum(earlier, second)
        seconds[window.second] = second
    return seconds


def _sum(first: ArmSecond, second: ArmSecond) -> ArmSecond:
    if first.histogram is None or second.histogram is None:
        histogram = first.histogram if second.histogram is None else second.histogram
    else:
        histogram = first.histogram + second.histogram
    return ArmSecond(first.requests + second.requests, first.failed + second.failed, histogram)
