"""Synthetic per-second traffic of a baseline and a canary, drawn from a Scenario, for the simulator.

Counts are draws, not per-request simulations: a second's requests are Poisson, the canary's share a
binomial at the canary weight, and each version's requests fall into cells, one per client group, that
share a failure chance and a latency distribution (the version's, times the group's, an incident's and
a cold start's factors). In a cell, timeouts are binomial, failures of the answered requests binomial,
and the latency histogram one multinomial over the bins of DDSketch's mapping with the probabilities of
the lognormal floored to HAProxy's timer resolution. Seconds are drawn in chunks at the weight in force,
with their cumulative histograms (what Evidence.add folds in, summed here for a whole chunk at once); a
weight change discards the seconds drawn beyond it.

Sticky clients: each client's first second is drawn up front (its requests are a Poisson process), and
when that second is drawn the client is sent to the canary with the weight in force, and stays there.
A client's requests in its first second are 1 plus Poisson at half its rate (the first request falls,
on average, mid-second for the rates where stickiness matters: far below one request a second).

Timeouts: a request that would take `timeout_s` or longer (or that never answers, `timeout_rate`) fails
without a latency, and HAProxy logs it `timeout_s` after it began. The judge learns of it then: the
simulator adds it to the version's second `ceil(timeout_s)` later (production files it under its accept
second, which the judge reads again once the late line is stored). The bad-request accounting counts it
in the second it began.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from fridaymorning.analysis.evidence import EMPTY_SECOND, ArmSecond
from fridaymorning.analysis.stats import (
    HISTOGRAM_SIZE,
    UPPER_EDGES,
    FloatArray,
    lognormal_parameters,
)
from fridaymorning.simulation.scenario import Scenario, Version

IntArray = npt.NDArray[np.int64]

CHUNK_S = 64
# Bins less likely than this are left out of the draw (expected count over a day at 10k req/s: < 1e-3).
NEGLIGIBLE = 1e-12


@lru_cache(maxsize=256)
def latency_support(
    p50: float, p99: float, factor: float, resolution_ms: float, timeout_ms: float
) -> tuple[int, FloatArray, float]:
    """Where the latencies of answered requests fall, and how many requests time out.

    The latency is the lognormal with this median and 99th percentile, times `factor`, floored to a
    multiple of `resolution_ms` (0: not floored). A request slower than `timeout_ms` is a timeout.
    Returns (first histogram index, probabilities of the bins from it on given an answer, timeout chance).
    """
    from scipy.stats import norm

    mu, sigma = lognormal_parameters(p50, p99)
    mu += math.log(factor)
    # Floored to r, a value is at most the bin's upper edge e when the latency is below (floor(e/r) + 1)·r.
    points = (
        (np.floor(UPPER_EDGES / resolution_ms) + 1.0) * resolution_ms if resolution_ms > 0 else UPPER_EDGES
    )
    points = np.minimum(points, timeout_ms)
    with np.errstate(divide="ignore"):
        cdf = norm.cdf((np.log(points) - mu) / sigma)
    timeout = float(norm.sf((math.log(timeout_ms) - mu) / sigma))
    answered = 1.0 - timeout
    if answered <= NEGLIGIBLE:
        return 0, np.ones(1), 1.0
    cdf[-1] = answered  # answers beyond the histogram's last edge are clamped into its last bin
    probabilities = np.clip(np.diff(cdf, prepend=0.0), 0.0, None)
    (indexes,) = np.nonzero(probabilities > NEGLIGIBLE * answered)
    low, high = int(indexes[0]), int(indexes[-1]) + 1
    support = probabilities[low:high]
    return low, support / support.sum(), timeout


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


@dataclass(frozen=True, slots=True)
class _Cell:
    """How the requests of one version from one client group behave during a chunk."""

    failure: float  # chance an answered request fails
    timeout: float  # chance a request times out
    low: int  # latency support: first histogram index and bin probabilities
    probabilities: FloatArray

    @property
    def bad(self) -> float:
        """The chance a request fails in any way."""
        return self.timeout + (1.0 - self.timeout) * self.failure


class _Arm:
    """Per-second counts of one version, by the second the requests began."""

    def __init__(self, duration: int) -> None:
        self.requests: IntArray = np.zeros(duration, dtype=np.int64)  # all requests, timeouts included
        self.failed: IntArray = np.zeros(duration, dtype=np.int64)  # failed ones, timeouts included
        self.timeouts: IntArray = np.zeros(duration, dtype=np.int64)


class TrafficStream:
    """The seconds of one simulated run, drawn lazily at the canary weight in force."""

    def __init__(self, scenario: Scenario, rng: np.random.Generator) -> None:
        self.scenario = scenario
        self.rng = rng
        duration = scenario.duration_s
        self._canary, self._baseline = _Arm(duration), _Arm(duration)
        # The canary's failures had its requests been served as the baseline served its own that second.
        self.canary_expected_failed: FloatArray = np.zeros(duration)
        self._rps = np.array([scenario.rps_at(second) for second in range(duration)])
        self._changes = [second for second in scenario.change_seconds() if 0 < second < duration]
        self._weights: list[tuple[int, int]] = [(0, 0)]  # (from second, canary percent)
        self._timeout_lag = math.ceil(scenario.timeout_s)
        clients = scenario.clients
        self._group_sizes = clients.group_sizes() if clients is not None else [1]
        self._client_count = clients.count if clients is not None else 1
        self._sticky = clients is not None and clients.sticky
        if self._sticky:
            self._first_seen = self._draw_first_seen()
            # Clients sent to each version by the end of each second, per group.
            self._canary_clients = np.zeros((len(self._group_sizes), duration), dtype=np.int64)
            self._baseline_clients = np.zeros((len(self._group_sizes), duration), dtype=np.int64)
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

    @property
    def canary_requests(self) -> IntArray:
        """The canary's requests by the second they began (timeouts included)."""
        return self._canary.requests

    @property
    def canary_failed(self) -> IntArray:
        """The canary's failed requests by the second they began (timeouts included)."""
        return self._canary.failed

    @property
    def baseline_requests(self) -> IntArray:
        """The baseline's requests by the second they began (timeouts included)."""
        return self._baseline.requests

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
        """Canary and baseline of one second as the judge reads it (drawn now if needed); empty past the end.

        Requests that timed out are missing from the second they began and added to the one they are
        logged in.
        """
        if second >= self.scenario.duration_s:
            return EMPTY_SECOND, EMPTY_SECOND
        self.draw_until(second + 1)
        return (
            self._visible(self._canary, second, self._canary_histograms, self._canary_cumulative),
            self._visible(self._baseline, second, self._baseline_histograms, self._baseline_cumulative),
        )

    def visible_canary_requests(self, start: int, end: int) -> int:
        """The canary requests the judge reads in the seconds [start, end) (timeouts where logged)."""
        return sum(self.second(second)[0].requests for second in range(start, end))

    def draw_until(self, end: int) -> None:
        """Draw every second before `end` that is not drawn yet."""
        end = min(end, self.scenario.duration_s)
        while self._end < end:
            self._draw(self._end)

    def _visible(self, arm: _Arm, second: int, histogram: FloatArray, cumulative: FloatArray) -> ArmSecond:
        late = int(arm.timeouts[second - self._timeout_lag]) if second >= self._timeout_lag else 0
        requests = int(arm.requests[second]) - int(arm.timeouts[second]) + late
        if requests == 0:
            return EMPTY_SECOND
        failed = int(arm.failed[second]) - int(arm.timeouts[second]) + late
        if cumulative[second, -1] <= 0:
            return ArmSecond(requests, failed, None)
        return ArmSecond(requests, failed, histogram[second], cumulative[second])

    def _draw_first_seen(self) -> IntArray:
        """How many clients of each group send their first request in each second (row per group)."""
        per_client = np.cumsum(self._rps) / self._client_count
        unseen = np.exp(-per_client)  # chance a client has sent nothing by the end of each second
        first = np.concatenate(([1.0], unseen[:-1])) - unseen
        probabilities = np.append(np.clip(first, 0.0, None), max(float(unseen[-1]), 0.0))
        probabilities /= probabilities.sum()
        rows = [self.rng.multinomial(size, probabilities)[:-1] for size in self._group_sizes]
        return np.asarray(rows, dtype=np.int64)

    def _draw(self, start: int) -> None:
        """Draw the seconds from `start` on, up to a chunk, a change of behaviour or of weight."""
        end = min(start + CHUNK_S, self.scenario.duration_s)
        end = min(
            [end, *(s for s in self._changes if s > start), *(s for s, _ in self._weights if s > start)]
        )
        weight = self.weight_at(start) / 100.0
        canary_by_group, baseline_by_group = (
            self._sticky_requests(start, end, weight)
            if self._sticky
            else self._routed_requests(start, end, weight)
        )
        canary_cells = [self._cell("canary", start, group) for group in range(len(self._group_sizes))]
        baseline_cells = [self._cell("baseline", start, group) for group in range(len(self._group_sizes))]
        self._draw_version(
            self._canary,
            start,
            canary_by_group,
            canary_cells,
            self._canary_histograms,
            self._canary_cumulative,
        )
        self._draw_version(
            self._baseline,
            start,
            baseline_by_group,
            baseline_cells,
            self._baseline_histograms,
            self._baseline_cumulative,
        )
        self.canary_expected_failed[start:end] = sum(
            requests * cell.bad for requests, cell in zip(canary_by_group, baseline_cells, strict=True)
        )
        self._start, self._end = start, end

    def _routed_requests(self, start: int, end: int, weight: float) -> tuple[list[IntArray], list[IntArray]]:
        """Each group's requests to each version when every request is routed on its own."""
        canary, baseline = [], []
        for size in self._group_sizes:
            totals = self.rng.poisson(self._rps[start:end] * (size / self._client_count))
            to_canary = self.rng.binomial(totals, weight)
            canary.append(to_canary)
            baseline.append(totals - to_canary)
        return canary, baseline

    def _sticky_requests(self, start: int, end: int, weight: float) -> tuple[list[IntArray], list[IntArray]]:
        """Each group's requests to each version when clients stay where they were first sent."""
        per_client = self._rps[start:end] / self._client_count
        canary: list[IntArray] = []
        baseline: list[IntArray] = []
        for group in range(len(self._group_sizes)):
            new = self._first_seen[group, start:end]
            new_canary = self.rng.binomial(new, weight)
            for sent, arm_clients, requests in (
                (new_canary, self._canary_clients, canary),
                (new - new_canary, self._baseline_clients, baseline),
            ):
                before = arm_clients[group, start - 1] if start > 0 else 0
                clients = before + np.cumsum(sent)
                arm_clients[group, start:end] = clients
                requests.append(self.rng.poisson(per_client * (clients - sent / 2.0)) + sent)
        return canary, baseline

    def _cell(self, version: Version, second: int, group: int) -> _Cell:
        """How `version` treats the requests of client `group` (0: plain clients) during `second`."""
        scenario = self.scenario
        behaviour = scenario.behaviour_at(version, second)
        incident_error, incident_factor = scenario.incident_at(second)
        group_error, group_factor = 0.0, 1.0
        if group > 0 and scenario.clients is not None:
            client_group = scenario.clients.groups[group - 1]
            group_error, group_factor = client_group.error_rate, client_group.latency_factor
        failure = 1.0 - (1.0 - behaviour.error_rate) * (1.0 - group_error) * (1.0 - incident_error)
        factor = group_factor * incident_factor * scenario.cold_factor(version, second)
        latency = behaviour.latency_ms
        low, probabilities, slow = latency_support(
            latency.p50, latency.p99, factor, scenario.latency_resolution_ms, scenario.timeout_s * 1000.0
        )
        timeout = behaviour.timeout_rate + (1.0 - behaviour.timeout_rate) * slow
        return _Cell(failure, timeout if timeout > NEGLIGIBLE else 0.0, low, probabilities)

    def _draw_version(
        self,
        arm: _Arm,
        start: int,
        requests_by_group: list[IntArray],
        cells: list[_Cell],
        histograms: FloatArray,
        cumulative: FloatArray,
    ) -> None:
        end = start + len(requests_by_group[0])
        histograms[start:end] = 0.0
        cumulative[start:end] = 0.0
        requests = np.zeros(end - start, dtype=np.int64)
        failed = np.zeros(end - start, dtype=np.int64)
        timeouts = np.zeros(end - start, dtype=np.int64)
        low, high = HISTOGRAM_SIZE, 0
        for group_requests, cell in zip(requests_by_group, cells, strict=True):
            timed_out = (
                self.rng.binomial(group_requests, cell.timeout) if cell.timeout > 0 else 0 * group_requests
            )
            answered = group_requests - timed_out
            requests += group_requests
            timeouts += timed_out
            failed += self.rng.binomial(answered, cell.failure) + timed_out
            if answered.any():
                cell_high = cell.low + len(cell.probabilities)
                histograms[start:end, cell.low : cell_high] += self.rng.multinomial(
                    answered, cell.probabilities
                )
                low, high = min(low, cell.low), max(high, cell_high)
        arm.requests[start:end], arm.failed[start:end], arm.timeouts[start:end] = requests, failed, timeouts
        if high > low:
            # np.cumsum of each row over the support only: the bins below it stay 0, above it all answers.
            np.cumsum(histograms[start:end, low:high], axis=1, out=cumulative[start:end, low:high])
            cumulative[start:end, high:] = (requests - timeouts)[:, None]
