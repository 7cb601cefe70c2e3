"""The judge's running evidence: counts, latency histograms and e-processes, folded one second at a time.

`Evidence.add` is the only place a second of traffic enters the statistics. The judge folds the stored
windows through it from the first second on every call; the simulator folds its generated seconds
through it as they happen. Both then ask `judge.verdict_of` for the verdict, so both decide identically.
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
    log_evalue,
    new_count_eprocess,
    update_count_eprocess,
)
from fridaymorning.models import Window


@dataclass(frozen=True, slots=True)
class ArmSecond:
    """One second of one version: requests, failed requests, and the histogram of their Tr (or None)."""

    requests: int
    failed: int
    histogram: FloatArray | None = None


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

    Holds the totals of both versions, their merged latency histograms, the error-rate e-process and one
    latency e-process per compared quantile (with the running maximum of each, since the controller may
    skip seconds between looks and a crossing must not be missed).
    """

    __slots__ = (
        "baseline_failed",
        "baseline_histogram",
        "baseline_latency_count",
        "baseline_requests",
        "canary_failed",
        "canary_histogram",
        "canary_latency_count",
        "canary_requests",
        "error_log_e",
        "error_log_ratios",
        "latency_log_e",
        "latency_log_ratios",
        "latency_thresholds",
        "quantiles",
        "seconds",
        "_canary_shift",
    )

    def __init__(self, policy: Policy) -> None:
        self.quantiles = np.asarray(policy.quantiles, dtype=np.float64)
        self._canary_shift = index_shift(policy.latency_fail_ratio)
        self.seconds = 0
        self.canary_requests = self.canary_failed = 0
        self.baseline_requests = self.baseline_failed = 0
        self.canary_latency_count = self.baseline_latency_count = 0.0
        self.canary_histogram = np.zeros(HISTOGRAM_SIZE)
        self.baseline_histogram = np.zeros(HISTOGRAM_SIZE)
        self.error_log_ratios = new_count_eprocess()
        self.error_log_e = 0.0
        self.latency_log_ratios = [new_count_eprocess() for _ in policy.quantiles]
        self.latency_log_e = [0.0 for _ in policy.quantiles]
        # Histogram index of the baseline's quantile each latency test last compared against (-1: none yet).
        self.latency_thresholds = [-1 for _ in policy.quantiles]

    def add(self, canary: ArmSecond, baseline: ArmSecond) -> None:
        """Fold one second of both versions into the evidence."""
        self.seconds += 1
        if canary.requests > 0 and baseline.requests > 0 and canary.failed + baseline.failed > 0:
            share = canary.requests / (canary.requests + baseline.requests)
            update_count_eprocess(self.error_log_ratios, canary.failed, baseline.failed, share)
            self.error_log_e = max(self.error_log_e, log_evalue(self.error_log_ratios))
        if canary.histogram is not None and baseline.histogram is not None:
            self._add_latency(canary.histogram, baseline.histogram)
        self.canary_requests += canary.requests
        self.canary_failed += canary.failed
        self.baseline_requests += baseline.requests
        self.baseline_failed += baseline.failed
        if canary.histogram is not None:
            self.canary_histogram += canary.histogram
            self.canary_latency_count += float(canary.histogram.sum())
        if baseline.histogram is not None:
            self.baseline_histogram += baseline.histogram
            self.baseline_latency_count += float(baseline.histogram.sum())

    def _add_latency(self, canary: FloatArray, baseline: FloatArray) -> None:
        """Count this second's requests slower than the baseline's quantiles so far, and test the counts.

        The thresholds come from earlier seconds only, so they are predictable and each second's factor
        keeps the e-process a supermartingale (see stats.update_count_eprocess).
        """
        if self.baseline_latency_count <= 0:
            return
        canary_count, baseline_count = float(canary.sum()), float(baseline.sum())
        if canary_count <= 0 or baseline_count <= 0:
            return
        cumulative = np.cumsum(self.baseline_histogram)
        ranks = self.quantiles * (self.baseline_latency_count - 1.0)
        thresholds = np.searchsorted(cumulative, ranks, side="right")
        # tail[i] = requests in bins i and above; one zero past the end for "nothing above".
        canary_tail = np.append(np.cumsum(canary[::-1])[::-1], 0.0)
        baseline_tail = np.append(np.cumsum(baseline[::-1])[::-1], 0.0)
        share = canary_count / (canary_count + baseline_count)
        last = HISTOGRAM_SIZE
        for position, threshold in enumerate(thresholds.tolist()):
            self.latency_thresholds[position] = threshold
            slower_baseline = float(baseline_tail[min(threshold + 1, last)])
            slower_canary = float(canary_tail[min(threshold + 1 + self._canary_shift, last)])
            if slower_baseline + slower_canary <= 0:
                continue
            log_ratios = self.latency_log_ratios[position]
            update_count_eprocess(log_ratios, slower_canary, slower_baseline, share)
            self.latency_log_e[position] = max(self.latency_log_e[position], log_evalue(log_ratios))

    @property
    def error_evalue(self) -> float:
        """The running maximum of the error-rate e-process."""
        return math.exp(min(self.error_log_e, 700.0))

    def latency_evalue(self, position: int) -> float:
        """The running maximum of the latency e-process of the quantile at `position`."""
        return math.exp(min(self.latency_log_e[position], 700.0))


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
