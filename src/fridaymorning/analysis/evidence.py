"""The judge's running evidence: counts, latency histograms and e-processes, folded one second at a time.

`Evidence.add` is the only place a second of traffic enters the statistics. The controller keeps a
`RunningEvidence` per rollout (controller.judging) and folds only the seconds closed since its last
judgement (every stored second once after a restart); `judge.judge` (used by `fm replay`) folds all of a
rollout's windows at once, with the same result. The simulator folds its generated seconds through it
as they happen. Both then ask `judge.verdict_of` for the verdict (the simulator asks
`judge.fails` first, the failing side of the same checks, and builds the verdict only when it can change
the decision), so both decide identically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.stats import (
    HISTOGRAM_SIZE,
    THETA_GRID,
    UPPER_EDGES,
    VALUES,
    FloatArray,
    key_index,
    new_count_eprocesses,
    update_count_eprocesses,
)
from fridaymorning.models import LatencySketch, Window

# HAProxy measures Tr in whole milliseconds: latency ratios compare (a + 1) / (b + 1), so that 0 ms and
# 1 ms responses do not make a 2x regression.
TIMER_RESOLUTION_MS = 1.0


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


def histogram_of(sketch: LatencySketch) -> FloatArray | None:
    """A latency sketch's counts on the judge's histogram; None when empty.

    The histogram's bins are the sketch's own keys (index = key - KEY_LOW + 1, see stats.KEY_LOW), so a
    latency is quantized once, by the sketch; only keys beyond the histogram's ends are clamped into them.
    """
    if not sketch.count:
        return None
    histogram = np.zeros(HISTOGRAM_SIZE)
    low_key, counts = sketch.key_counts()
    if counts:
        high_key = low_key + len(counts) - 1
        low, high = key_index(low_key), key_index(high_key)
        if high - low + 1 == len(counts):
            histogram[low : high + 1] += counts
        else:  # keys beyond the histogram's range are clamped into its end bins
            indexes = [key_index(key) for key in range(low_key, high_key + 1)]
            np.add.at(histogram, indexes, counts)
    histogram[0] += sketch.below_count
    return histogram


def arm_second(window: Window) -> ArmSecond:
    """A stored window as the judge reads it."""
    return ArmSecond(window.requests, window.failed, histogram_of(window.tr))


# To end its warm-up before warmup_s, the canary's median must match the baseline's (within
# latency_tolerance) in SETTLE_SECONDS consecutive seconds holding SETTLE_LATENCIES canary latencies:
# 3 s at 100 canary requests a second, 5 s at 10. A cold canary 1.5x slower then ends it early in
# under 3% of 30-second cold starts (docs/statistics.md, "Warm-up").
SETTLE_SECONDS = 3
SETTLE_LATENCIES = 50.0


class SloBlock:
    """The traffic of both versions over one block of `slo_window_s` seconds, for the SLO checks.

    Blocks start every half window, so the last `slo_window_s` seconds always lie within one or two of
    them; block `index` (1, 2, ...) spends alpha'/(index(index + 1)) of the SLO checks' share.
    """

    __slots__ = (
        "baseline_cumulative",
        "baseline_failed",
        "baseline_requests",
        "canary_cumulative",
        "canary_failed",
        "canary_requests",
        "index",
        "start",
    )

    def __init__(self, index: int, start: int) -> None:
        self.index, self.start = index, start
        self.canary_requests = self.canary_failed = 0
        self.baseline_requests = self.baseline_failed = 0
        self.canary_cumulative = np.zeros(HISTOGRAM_SIZE)
        self.baseline_cumulative = np.zeros(HISTOGRAM_SIZE)

    def add(
        self,
        canary: ArmSecond,
        baseline: ArmSecond,
        canary_cumulative: FloatArray | None,
        baseline_cumulative: FloatArray | None,
    ) -> None:
        """Add one second; the cumulative histograms are None for seconds not judged on latency."""
        self.canary_requests += canary.requests
        self.canary_failed += canary.failed
        self.baseline_requests += baseline.requests
        self.baseline_failed += baseline.failed
        if canary_cumulative is not None:
            self.canary_cumulative += canary_cumulative
        if baseline_cumulative is not None:
            self.baseline_cumulative += baseline_cumulative


@dataclass(frozen=True, slots=True)
class Suffixes:
    """The traffic since each SLO block's start until now, one row per block (block k in row k - 1).

    Counts as arrays; the canary's cumulative histogram of a suffix is computed on demand (the totals
    minus the totals when the block opened), one bin for every block, or every bin for one block.
    """

    indexes: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int64]  # canary requests, canary failed, baseline requests, baseline failed
    canary_total: FloatArray
    # The canary's cumulative histogram when each block opened, in its first columns only: every entry
    # beyond them equals a row's last one (no latency lay in a higher bin yet when the block opened).
    canary_before: npt.NDArray[np.uint32] | FloatArray

    @property
    def canary_requests(self) -> npt.NDArray[np.int64]:
        return self.counts[:, 0]

    @property
    def canary_failed(self) -> npt.NDArray[np.int64]:
        return self.counts[:, 1]

    @property
    def baseline_requests(self) -> npt.NDArray[np.int64]:
        return self.counts[:, 2]

    @property
    def baseline_failed(self) -> npt.NDArray[np.int64]:
        return self.counts[:, 3]

    def canary_cumulative(self, row: int) -> FloatArray:
        """The canary's cumulative histogram of the suffix in `row`."""
        before = np.zeros(HISTOGRAM_SIZE)
        width = self.canary_before.shape[1]
        if width:
            before[:width] = self.canary_before[row]
            before[width:] = self.canary_before[row, width - 1]
        suffix: FloatArray = self.canary_total - before
        return suffix

    def canary_cumulative_at(self, index: int) -> FloatArray:
        """Entry `index` of every suffix's canary cumulative histogram (judged latencies up to that bin)."""
        width = self.canary_before.shape[1]
        if not width:
            return np.full(len(self.canary_before), self.canary_total[index])
        before = self.canary_before[:, min(index % HISTOGRAM_SIZE, width - 1)]
        column: FloatArray = self.canary_total[index] - before.astype(np.float64)
        return column


# Snapshots of the canary's cumulative histogram are kept as uint32 while their counts fit (a day of a
# canary at 1000 req/s is 86.4M), as float64 beyond: a day-old rollout's 2,880 SLO blocks then hold
# about 2,880 x 4 bytes per histogram column in use.
_UINT32_LIMIT = float(2**32 - 1)


class Evidence:
    """Everything the judge knows after some seconds of a rollout, updated one second at a time.

    Holds the totals of both versions, their merged latency histograms (as cumulative counts: entry i
    counts the requests in bins 0..i), the count e-processes (row 0 of `log_ratios`: errors; row 1 + k:
    latency at the k-th compared quantile) and the running maximum of each (`log_e`), since the
    controller may skip seconds between looks and a crossing must not be missed. All the e-processes of a
    second are updated in one array operation: a second costs the same however many quantiles are compared.

    The failing side tests against the policy's margins: an error counts against a baseline whose rate is
    raised to `error_fail_ratio` x its own + `error_fail_margin`, a canary request is "slower" only above
    `latency_fail_ratio` x the baseline's quantile + `latency_fail_floor_ms` (docs/statistics.md).
    Latencies of the canary's first `warmup_s` seconds of traffic (of both versions) are left out of
    every latency statistic; their requests and errors count. `slo_blocks` hold the last
    `slo_window_s` seconds for the SLO checks.
    """

    __slots__ = (
        "_canary_index",
        "_error_margin",
        "_error_ratio",
        "_floor_ms",
        "_grid_sizes",
        "_settled",
        "_settled_latencies",
        "_slo_half",
        "_slo_window",
        "_snapshot_canary",
        "_snapshot_counts",
        "_tolerance",
        "_warmup_s",
        "baseline_compared",
        "baseline_exceeding",
        "blocks_started",
        "canary_compared",
        "canary_exceeding",
        "canary_seconds",
        "latency_thresholds",
        "log_e",
        "log_ratios",
        "quantiles",
        "seconds",
        "slo_blocks",
        "totals",
        "warm_from",
    )

    def __init__(self, policy: Policy) -> None:
        self.quantiles = np.asarray(policy.quantiles, dtype=np.float64)
        self._canary_index = slower_index(policy.latency_fail_ratio, policy.latency_fail_floor_ms)
        self._error_ratio, self._error_margin = policy.error_fail_ratio, policy.error_fail_margin
        self._floor_ms, self._tolerance = policy.latency_fail_floor_ms, policy.latency_tolerance
        self._warmup_s, self._settled, self._settled_latencies = policy.warmup_s, 0, 0.0
        self._slo_window, self._slo_half = policy.slo_window_s, max(1, policy.slo_window_s // 2)
        self.seconds = 0
        # Seconds since the canary's first traffic (0: none yet), and the one from which latencies are
        # judged (None: still warming up).
        self.canary_seconds = 0
        self.warm_from: int | None = 0 if policy.warmup_s == 0 else None
        # Both versions' traffic since the rollout began (block 0, from its first second).
        self.totals = SloBlock(0, 1)
        rows = 1 + len(policy.quantiles)
        self.log_ratios = new_count_eprocesses(rows)
        # Each latency row mixes only the ratios θ ≤ 1/(1 - q) of THETA_GRID: a canary request cannot
        # exceed the baseline's q-quantile more than 1/(1 - q) times as often as a baseline request.
        self._grid_sizes = [len(THETA_GRID)] + [
            max(1, int(np.searchsorted(THETA_GRID, 1.0 / (1.0 - q), side="right"))) for q in policy.quantiles
        ]
        self.log_e = [0.0] * rows
        # Histogram index of the baseline's quantile each latency test last compared against (-1: none yet).
        self.latency_thresholds = [-1 for _ in policy.quantiles]
        # Per compared quantile: latencies compared, and those counted slower, of each version.
        self.canary_compared = [0.0 for _ in policy.quantiles]
        self.canary_exceeding = [0.0 for _ in policy.quantiles]
        self.baseline_compared = [0.0 for _ in policy.quantiles]
        self.baseline_exceeding = [0.0 for _ in policy.quantiles]
        self.slo_blocks: list[SloBlock] = []
        self.blocks_started = 0
        # The totals when each SLO block opened (row k - 1 for block k): the pass side also bounds the
        # traffic since then. Counts (canary requests, failed; baseline requests, failed) and the canary's
        # cumulative histogram (its columns in use, see Suffixes); the arrays grow by doubling.
        self._snapshot_counts = np.zeros((0, 4), dtype=np.int64)
        self._snapshot_canary: npt.NDArray[np.uint32] | FloatArray = np.zeros((0, 0), dtype=np.uint32)

    def add(self, canary: ArmSecond, baseline: ArmSecond) -> None:
        """Fold one second of both versions into the evidence."""
        self.seconds += 1
        if canary.requests > 0 or self.canary_seconds > 0:
            self.canary_seconds += 1
        canary_cumulative = canary.cumulative_histogram()
        baseline_cumulative = baseline.cumulative_histogram()
        judged = self._judges_latency(canary_cumulative, baseline_cumulative)
        if not judged:
            canary_cumulative = baseline_cumulative = None
        rows = len(self.log_e)
        canary_events, baseline_events, shares = [0.0] * rows, [0.0] * rows, [0.0] * rows
        if canary.requests > 0 and baseline.requests > 0:
            self._count_errors(canary, baseline, canary_events, baseline_events, shares)
        if canary_cumulative is not None and baseline_cumulative is not None:
            self._count_slower(canary_cumulative, baseline_cumulative, canary_events, baseline_events, shares)
        self._update(canary_events, baseline_events, shares)
        if (self.seconds - 1) % self._slo_half == 0:
            self._snapshot_totals()
        self.totals.add(canary, baseline, canary_cumulative, baseline_cumulative)
        self._add_to_slo_blocks(canary, baseline, canary_cumulative, baseline_cumulative)

    def _update(self, canary_events: list[float], baseline_events: list[float], shares: list[float]) -> None:
        """Multiply the e-processes by this second's factors, and keep their running maxima."""
        rows = len(self.log_e)
        # update_count_eprocess skips a test without events or with a one-sided split; so does a zero row.
        updated = [
            row
            for row in range(rows)
            if canary_events[row] + baseline_events[row] > 0 and 0.0 < shares[row] < 1.0
        ]
        if not updated:
            return
        if len(updated) < rows:
            canary_events = [canary_events[row] if row in updated else 0.0 for row in range(rows)]
            baseline_events = [baseline_events[row] if row in updated else 0.0 for row in range(rows)]
            shares = [shares[row] if row in updated else 0.0 for row in range(rows)]
        update_count_eprocesses(self.log_ratios, canary_events, baseline_events, shares)
        # The mixture's mean is at most its largest ratio: when that cannot raise the maximum, skip it.
        tops = self.log_ratios.max(axis=1).tolist()
        for row in updated:
            if tops[row] + 1e-9 * (1.0 + abs(tops[row])) > self.log_e[row]:
                self.log_e[row] = max(self.log_e[row], self._log_evalue(row))

    def _log_evalue(self, row: int) -> float:
        """log of row's mixture e-value: the mean of its likelihood ratios over its part of THETA_GRID."""
        ratios = self.log_ratios[row, : self._grid_sizes[row]]
        top = float(ratios.max())
        return top + math.log(float(np.exp(ratios - top).sum())) - math.log(len(ratios))

    def _count_errors(
        self,
        canary: ArmSecond,
        baseline: ArmSecond,
        canary_events: list[float],
        baseline_events: list[float],
        shares: list[float],
    ) -> None:
        """This second's errors as the events of row 0, against the margin of the policy.

        The null is "canary rate ≤ ratio x baseline rate + margin" in every second. The baseline gets
        baseline_requests x margin / ratio expected errors more (deterministic pseudo-errors) and the
        canary's share is weighted by the ratio; docs/statistics.md shows the factor then has mean ≤ 1
        under the null. The pseudo-errors make the factor below 1 even in a second without errors, so
        such a second is not skipped.
        """
        ratio, margin = self._error_ratio, self._error_margin
        pseudo = baseline.requests * margin / ratio
        if canary.failed + baseline.failed + pseudo <= 0:
            return
        weighted = ratio * canary.requests
        canary_events[0] = canary.failed
        baseline_events[0] = baseline.failed + pseudo
        shares[0] = weighted / (weighted + baseline.requests)

    def _judges_latency(self, canary: FloatArray | None, baseline: FloatArray | None) -> bool:
        """Whether this second's latencies are judged; moves the warm-up on.

        The warm-up lasts the canary's first `warmup_s` seconds of traffic, or ends earlier after
        consecutive seconds (at least SETTLE_SECONDS, with SETTLE_LATENCIES canary latencies) in each of
        which the canary's median (+ 1 ms) is within `latency_tolerance` of the baseline's (+ 1 ms).
        The decision uses only seconds already seen, so the judged seconds start at a stopping time and
        the e-processes stay valid.
        """
        if self.warm_from is not None:
            return True
        if self.canary_seconds > self._warmup_s:
            self.warm_from = self.seconds
            return True
        if canary is not None and baseline is not None and canary[-1] > 0 and baseline[-1] > 0:
            canary_median = VALUES[_median_index(canary)] + TIMER_RESOLUTION_MS
            baseline_median = VALUES[_median_index(baseline)] + TIMER_RESOLUTION_MS
            matches = canary_median <= self._tolerance * baseline_median
        else:
            matches = False
        self._settled = self._settled + 1 if matches else 0
        self._settled_latencies = (
            self._settled_latencies + float(canary[-1]) if matches and canary is not None else 0.0
        )
        if self._settled >= SETTLE_SECONDS and self._settled_latencies >= SETTLE_LATENCIES:
            self.warm_from = self.seconds + 1
        return False

    def _add_to_slo_blocks(
        self,
        canary: ArmSecond,
        baseline: ArmSecond,
        canary_cumulative: FloatArray | None,
        baseline_cumulative: FloatArray | None,
    ) -> None:
        """Add the second to the SLO blocks that hold it, opening one every half window."""
        second = self.seconds
        self.slo_blocks = [b for b in self.slo_blocks if second - b.start < self._slo_window]
        if (second - 1) % self._slo_half == 0:
            self.blocks_started += 1
            self.slo_blocks.append(SloBlock(self.blocks_started, second))
        for block in self.slo_blocks:
            block.add(canary, baseline, canary_cumulative, baseline_cumulative)

    @property
    def canary_requests(self) -> int:
        """The canary's requests since the rollout began."""
        return self.totals.canary_requests

    @property
    def canary_failed(self) -> int:
        """The canary's failed requests since the rollout began."""
        return self.totals.canary_failed

    @property
    def baseline_requests(self) -> int:
        """The baseline's requests since the rollout began."""
        return self.totals.baseline_requests

    @property
    def baseline_failed(self) -> int:
        """The baseline's failed requests since the rollout began."""
        return self.totals.baseline_failed

    @property
    def canary_cumulative(self) -> FloatArray:
        """The canary's judged latencies since the rollout began, as a cumulative histogram."""
        return self.totals.canary_cumulative

    @property
    def baseline_cumulative(self) -> FloatArray:
        """The baseline's judged latencies since the rollout began, as a cumulative histogram."""
        return self.totals.baseline_cumulative

    def _snapshot_totals(self) -> None:
        """Keep the totals as they are when block number blocks_started + 1 opens.

        The canary's cumulative histogram is kept up to its highest bin in use (Suffixes.canary_before):
        the columns grow when a latency lands higher, as a uint32 array while its counts are whole and
        fit, else as float64.
        """
        row, totals = self.blocks_started, self.totals
        cumulative = totals.canary_cumulative
        last = float(cumulative[-1])
        width = int(np.searchsorted(cumulative, last, side="left")) + 1 if last > 0 else 0
        snapshots = self._snapshot_canary
        rows, columns = snapshots.shape
        dtype = snapshots.dtype
        if dtype == np.uint32 and (
            last > _UINT32_LIMIT or not np.array_equal(cumulative, np.floor(cumulative))
        ):
            dtype = np.dtype(np.float64)
        if row == rows or width > columns or dtype != snapshots.dtype:
            capacity = max(8, 2 * row) if row == rows else rows
            grown = np.zeros((capacity, max(width, columns)), dtype=dtype)
            grown[:row, :columns] = snapshots[:row]
            if columns:
                grown[:row, columns:] = snapshots[:row, columns - 1 : columns]
            self._snapshot_canary = snapshots = grown
            if row == rows:
                counts = np.zeros((capacity, 4), dtype=np.int64)
                counts[:row] = self._snapshot_counts
                self._snapshot_counts = counts
        self._snapshot_counts[row] = (
            totals.canary_requests,
            totals.canary_failed,
            totals.baseline_requests,
            totals.baseline_failed,
        )
        columns = snapshots.shape[1]
        snapshots[row] = cumulative[:columns]

    def suffixes(self) -> Suffixes:
        """For every SLO block opened so far, the traffic from its first second until now.

        The pass side bounds these as well as the whole rollout, so that an incident both versions
        shared stops weighing on a pass once it lies before some block's start.
        """
        totals, blocks = self.totals, self.blocks_started
        now = np.array(
            [totals.canary_requests, totals.canary_failed, totals.baseline_requests, totals.baseline_failed],
            dtype=np.int64,
        )
        return Suffixes(
            np.arange(1, blocks + 1),
            now - self._snapshot_counts[:blocks],
            totals.canary_cumulative,
            self._snapshot_canary[:blocks],
        )

    @property
    def warming_up(self) -> bool:
        """Whether the canary's latencies are not judged yet."""
        return self.warm_from is None or self.warm_from > self.seconds

    @property
    def canary_latency_count(self) -> float:
        """How many canary requests have a judged latency."""
        return float(self.canary_cumulative[-1])

    @property
    def baseline_latency_count(self) -> float:
        """How many baseline requests have a judged latency."""
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

        `canary` and `baseline` are the second's cumulative histograms. A baseline request counts when
        above the bin of the baseline's quantile c; a canary request only when above the bin holding
        latency_fail_ratio x c + latency_fail_floor_ms (c: that bin's upper edge), so a canary request
        in a bin that might lie below the margin never counts. The thresholds come from earlier seconds
        only, so they are predictable and each second's factor keeps the e-process a supermartingale
        (see stats.update_count_eprocess).
        """
        earlier = float(self.baseline_cumulative[-1])
        canary_count, baseline_count = float(canary[-1]), float(baseline[-1])
        if earlier <= 0 or canary_count <= 0 or baseline_count <= 0:
            return
        thresholds = np.searchsorted(self.baseline_cumulative, self.quantiles * (earlier - 1.0), side="right")
        share = canary_count / (canary_count + baseline_count)
        for position, threshold in enumerate(thresholds.tolist()):
            self.latency_thresholds[position] = threshold
            # Requests in the bins above the threshold's bin: all of them minus those up to it.
            canary_slower = canary_count - float(canary[self._canary_index[threshold]])
            baseline_slower = baseline_count - float(baseline[threshold])
            canary_events[1 + position], baseline_events[1 + position] = canary_slower, baseline_slower
            shares[1 + position] = share
            self.canary_compared[position] += canary_count
            self.canary_exceeding[position] += canary_slower
            self.baseline_compared[position] += baseline_count
            self.baseline_exceeding[position] += baseline_slower

    def canary_limit_ms(self, threshold: int) -> float:
        """The latency above which a canary request counts as slower, for the baseline's bin `threshold`."""
        return float(UPPER_EDGES[self._canary_index[threshold]])

    @property
    def error_evalue(self) -> float:
        """The running maximum of the error-rate e-process."""
        return math.exp(min(self.log_e[0], 700.0))

    def latency_evalue(self, position: int) -> float:
        """The running maximum of the latency e-process of the quantile at `position`."""
        return math.exp(min(self.log_e[1 + position], 700.0))


def slower_index(ratio: float, floor_ms: float) -> list[int]:
    """For each histogram bin c, the bin above which a canary request is slower than ratio·c + floor.

    c stands for the bin's upper edge, and the bin returned holds ratio·c + floor (a hair more, against
    rounding), so every request above it is surely slower than the margin.
    """
    limits = (ratio * UPPER_EDGES + floor_ms) * (1.0 + 1e-9)
    indexes = np.searchsorted(UPPER_EDGES, limits, side="left")
    return [int(index) for index in np.minimum(indexes, HISTOGRAM_SIZE - 1)]


def _median_index(cumulative: FloatArray) -> int:
    """The histogram index of a second's median, as DDSketch's quantile reads it."""
    return min(int(cumulative.searchsorted(0.5 * (cumulative[-1] - 1.0), side="right")), HISTOGRAM_SIZE - 1)


def evidence_of(canary: Sequence[Window], baseline: Sequence[Window], policy: Policy) -> Evidence:
    """Fold stored windows into evidence, second by second, all at once (see RunningEvidence.fold)."""
    running = RunningEvidence(policy)
    running.fold(canary, baseline)
    return running.evidence


class RunningEvidence:
    """A rollout's evidence kept between judgements: each judgement folds only the seconds not folded yet.

    Folding a rollout's windows in several calls, each with the windows of the seconds from
    `unread_from` on, gives the same evidence (and so the same verdict) as folding them all in one call,
    as long as no window arrives later for a second already folded: the collector writes each second
    once, `data_lag_s` after it ends (a line later still counts in the oldest second still open), and
    the controller reads no closer to now. controller.judging handles the one exception, a collector
    process that started again.

    The folding starts at the first second any window has. A second missing for one version counts as
    empty; seconds without any window up to the last second with one are folded in empty, so the
    warm-up and the SLO window count seconds of time, as the simulator does. Seconds after the last
    window are folded once a later window arrives (or never), exactly as a fold of every window would.

    It also counts the canary's requests since the current step's first second (`step_requests`).
    """

    __slots__ = ("evidence", "next_second", "step_requests", "step_start")

    def __init__(self, policy: Policy) -> None:
        self.evidence = Evidence(policy)
        # The first second not folded yet; None until a window arrives.
        self.next_second: int | None = None
        self.step_start = 0
        self.step_requests = 0

    def unread_from(self, start: int) -> int:
        """The first second the next fold needs windows of, for a rollout whose seconds start at `start`."""
        return start if self.next_second is None else self.next_second

    def start_step(self, step_start: int, counted: int = 0) -> None:
        """Count the canary's requests from second `step_start` on.

        `counted`: the canary's requests in the seconds from `step_start` already folded (none when
        the step starts after them, as a step that starts now does).
        """
        self.step_start, self.step_requests = step_start, counted

    def fold(self, canary: Sequence[Window], baseline: Sequence[Window]) -> None:
        """Fold in the windows (one per second and version) of seconds not folded yet.

        Raises ValueError for a window of a second already folded: the evidence cannot take it back.
        """
        canary_seconds, baseline_seconds = _by_second(canary), _by_second(baseline)
        seconds = canary_seconds.keys() | baseline_seconds.keys()
        if not seconds:
            return
        first = min(seconds) if self.next_second is None else self.next_second
        if min(seconds) < first:
            raise ValueError(f"a window of second {min(seconds)}, which was folded already (next: {first})")
        last = max(seconds)
        for second in range(first, last + 1):
            canary_second = canary_seconds.get(second, EMPTY_SECOND)
            self.evidence.add(canary_second, baseline_seconds.get(second, EMPTY_SECOND))
            if second >= self.step_start:
                self.step_requests += canary_second.requests
        self.next_second = last + 1


def _by_second(windows: Sequence[Window]) -> dict[int, ArmSecond]:
    """The windows by second; raises ValueError for two windows of one second.

    A MetricStore returns one window per second (it adds up those several collectors wrote), so the
    windows of a second are merged once, by the store.
    """
    seconds: dict[int, ArmSecond] = {}
    for window in windows:
        if window.second in seconds:
            raise ValueError(f"two windows of second {window.second}: a store returns one per second")
        seconds[window.second] = arm_second(window)
    return seconds
