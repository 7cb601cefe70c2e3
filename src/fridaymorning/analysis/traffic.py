"""Synthetic per-second traffic of a baseline and a canary, drawn from a Scenario, for the simulator.

Counts are draws, not per-request simulations: a second's total is Poisson(rps), the canary's share a
binomial at the canary weight, failures binomial at each version's error rate, and the latency histogram
one multinomial over the bins of DDSketch's mapping with the lognormal's probabilities. Seconds are
drawn in chunks at the weight in force, with their cumulative histograms (what Evidence.add folds in,
summed here for a whole chunk at once); a weight change discards the seconds drawn beyond it.
"""

from __future__ import annotations

import weakref
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

from fridaymorning.analysis.evidence import EMPTY_SECOND, ArmSecond
from fridaymorning.analysis.scenario import Scenario
from fridaymorning.analysis.stats import (
    HISTOGRAM_SIZE,
    FloatArray,
    lognormal_bin_probabilities,
)

IntArray = npt.NDArray[np.int64]

CHUNK_S = 64
# Bins less likely than this are left out of the draw (expected count over a day at 10k req/s: < 1e-3).
NEGLIGIBLE = 1e-12


@lru_cache(maxsize=64)
def _support(p50: float, p99: float) -> tuple[int, FloatArray]:
    """First index and probabilities of the bins a lognormal can realistically fill."""
    probabilities = lognormal_bin_probabilities(p50, p99)
    (indexes,) = np.nonzero(probabilities > NEGLIGIBLE)
    low, high = int(indexes[0]), int(indexes[-1]) + 1
    support = probabilities[low:high]
    return low, support / support.sum()


Buffers = tuple[FloatArray, FloatArray, FloatArray, FloatArray]
_POOL: dict[int, list[Buffers]] = {}
_POOL_SIZE = 4


def _take_buffers(duration: int) -> Buffers:
    """Four (duration, HISTOGRAM_SIZE) arrays of undefined content, reused from a dead stream if any."""
    free = _POOL.get(duration)
    if free:
        return free.pop()
    return (
        np.empty((duration, HISTOGRAM_SIZE)),
        np.empty((duration, HISTOGRAM_SIZE)),
        np.empty((duration, HISTOGRAM_SIZE)),
        np.empty((duration, HISTOGRAM_SIZE)),
    )


def _give_back(duration: int, buffers: Buffers) -> None:
    free = _POOL.setdefault(duration, [])
    if len(free) < _POOL_SIZE:
        free.append(buffers)


class TrafficStream:
    """The seconds of one simulated run, drawn lazily at the canary weight in force."""

    def __init__(self, scenario: Scenario, rng: np.random.Generator) -> None:
        self.scenario = scenario
        self.rng = rng
        duration = scenario.duration_s
        self.canary_requests: IntArray = np.zeros(duration, dtype=np.int64)
        self.canary_failed: IntArray = np.zeros(duration, dtype=np.int64)
        self.baseline_requests: IntArray = np.zeros(duration, dtype=np.int64)
        self.baseline_failed: IntArray = np.zeros(duration, dtype=np.int64)
        # The baseline's error rate during each second: the canary's expected failures had it been as good.
        self.baseline_error_rate: FloatArray = np.zeros(duration)
        self._rps = np.array([scenario.rps_at(second) for second in range(duration)])
        self._changes = [second for second in scenario.change_seconds() if 0 < second < duration]
        self._weights: list[tuple[int, int]] = [(0, 0)]  # (from second, canary percent)
        # Every second before _end is drawn; those from _start on at the current weight.
        self._start = self._end = 0
        # Rows are written by _draw before they are read, so the arrays need not start zeroed: they come
        # from a pool of earlier streams' arrays (fresh ones cost a page fault per 4 kB, ~15 ms a run).
        buffers = _take_buffers(duration)
        weakref.finalize(self, _give_back, duration, buffers)
        (
            self._canary_histograms,
            self._baseline_histograms,
            self._canary_cumulative,
            self._baseline_cumulative,
        ) = buffers

    def set_weight(self, canary_percent: int, from_second: int) -> None:
        """Send `canary_percent` of the traffic to the canary from `from_second` on."""
        self._weights.append((from_second, canary_percent))
        self._end = min(self._end, max(from_second, self._start))

    def weight_at(self, second: int) -> int:
        """The canary weight in force during `second`."""
        weight = 0
        for start, percent in self._weights:
            if start <= second:
                weight = percent
        return weight

    def second(self, second: int) -> tuple[ArmSecond, ArmSecond]:
        """Canary and baseline of one second (drawn now if needed); empty past the scenario's end."""
        if second >= self.scenario.duration_s:
            return EMPTY_SECOND, EMPTY_SECOND
        self.draw_until(second + 1)
        return (
            _arm(
                self.canary_requests[second],
                self.canary_failed[second],
                self._canary_histograms[second],
                self._canary_cumulative[second],
            ),
            _arm(
                self.baseline_requests[second],
                self.baseline_failed[second],
                self._baseline_histograms[second],
                self._baseline_cumulative[second],
            ),
        )

    def draw_until(self, end: int) -> None:
        """Draw every second before `end` that is not drawn yet."""
        end = min(end, self.scenario.duration_s)
        while self._end < end:
            self._draw(self._end)

    def _draw(self, start: int) -> None:
        """Draw the seconds from `start` on, up to a chunk, a change of behaviour or of weight."""
        end = min(start + CHUNK_S, self.scenario.duration_s)
        end = min(
            [end, *(s for s in self._changes if s > start), *(s for s, _ in self._weights if s > start)]
        )
        length = end - start
        weight = self.weight_at(start) / 100.0
        totals = self.rng.poisson(self._rps[start:end])
        canary = self.rng.binomial(totals, weight)
        baseline = totals - canary
        self._draw_version("canary", start, canary, self._canary_histograms, self._canary_cumulative)
        self._draw_version("baseline", start, baseline, self._baseline_histograms, self._baseline_cumulative)
        self.canary_requests[start:end] = canary
        self.baseline_requests[start:end] = baseline
        self._start, self._end = start, start + length

    def _draw_version(
        self,
        version: Literal["canary", "baseline"],
        start: int,
        requests: IntArray,
        histograms: FloatArray,
        cumulative: FloatArray,
    ) -> None:
        behaviour = self.scenario.behaviour_at(version, start)
        end = start + len(requests)
        failed = self.rng.binomial(requests, behaviour.error_rate)
        if version == "canary":
            self.canary_failed[start:end] = failed
        else:
            self.baseline_failed[start:end] = failed
            self.baseline_error_rate[start:end] = behaviour.error_rate
        histograms[start:end] = 0.0
        cumulative[start:end] = 0.0
        if requests.any():
            low, probabilities = _support(behaviour.latency_ms.p50, behaviour.latency_ms.p99)
            high = low + len(probabilities)
            draws = self.rng.multinomial(requests, probabilities)
            histograms[start:end, low:high] = draws
            # np.cumsum of each row, summed over the support only: the bins below it stay 0, above it all.
            np.cumsum(draws, axis=1, dtype=np.float64, out=cumulative[start:end, low:high])
            cumulative[start:end, high:] = requests[:, None]


def _arm(requests: np.int64, failed: np.int64, histogram: FloatArray, cumulative: FloatArray) -> ArmSecond:
    if requests == 0:
        return EMPTY_SECOND
    return ArmSecond(int(requests), int(failed), histogram, cumulative)
