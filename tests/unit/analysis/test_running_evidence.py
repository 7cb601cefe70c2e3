"""Evidence kept between judgements gives the verdicts folding every stored second again gives."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fridaymorning.analysis.evidence import ArmSecond, Evidence, RunningEvidence, evidence_of
from fridaymorning.analysis.judge import (
    _order_statistic,
    judge,
    smallest_error_excess_bound,
    smallest_error_rate_bound,
    smallest_p99_bound,
    verdict_of,
)
from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.stats import (
    HISTOGRAM_SIZE,
    UPPER_EDGES,
    index_of_value,
    quantile_upper_rank,
    rate_lower_bound,
    rate_upper_bound,
)
from fridaymorning.testing import MemoryMetricStore, synthetic_window

# Short windows of time, so that a few dozen seconds cross the warm-up, several SLO blocks and steps.
POLICY = Policy(min_requests=50, warmup_s=4, slo_window_s=6, max_error_rate=0.05, max_p99_ms=60.0)

# One version's traffic in one second: (requests, failed, latency in ms); None: no window at all.
version_second = st.one_of(
    st.none(),
    st.tuples(
        st.integers(0, 40),
        st.integers(0, 40),
        st.sampled_from([0.0, 1.0, 8.0, 20.0, 30.0, 90.0, 400.0]),
    ),
)


def store_of(
    canary: list[tuple[int, int, float] | None], baseline: list[tuple[int, int, float] | None], copies: int
) -> MemoryMetricStore:
    """A store holding both versions' windows from second 100 on; `copies` collectors wrote each second."""
    store = MemoryMetricStore()
    for version, seconds in (("v2", canary), ("v1", baseline)):
        for offset, traffic in enumerate(seconds):
            if traffic is None:
                continue
            requests, failed, latency_ms = traffic
            for _ in range(copies):
                window = synthetic_window(
                    "web", version, 100 + offset, requests, min(failed, requests), latency_ms
                )
                store.write([window])
    return store


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    canary=st.lists(version_second, min_size=1, max_size=40),
    baseline=st.lists(version_second, min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 45), max_size=8),
    step_start=st.integers(95, 145),
    copies=st.integers(1, 2),
    compare=st.booleans(),
)
def test_folding_tick_by_tick_equals_folding_from_scratch(
    canary: list[tuple[int, int, float] | None],
    baseline: list[tuple[int, int, float] | None],
    cuts: list[int],
    step_start: int,
    copies: int,
    compare: bool,
) -> None:
    """At every judgement (any split of the seconds into ticks, with gaps, missing versions and seconds
    written by two collectors) the kept evidence gives the verdict and the step's canary requests that
    folding every window from the rollout's start gives."""
    store = store_of(canary, baseline, copies)
    start = 100
    running = RunningEvidence(POLICY)
    for end in sorted({100 + cut for cut in cuts} | {146}):
        if step_start != running.step_start:
            first = running.unread_from(start)
            counted = sum(w.requests for w in store.query("web", "v2", step_start, first))
            running.start_step(step_start, counted)
        first = running.unread_from(start)
        running.fold(store.query("web", "v2", first, end), store.query("web", "v1", first, end))
        seen_canary, seen_baseline = (
            store.query("web", "v2", start, end),
            store.query("web", "v1", start, end),
        )
        expected = judge(seen_canary, seen_baseline, POLICY, compare=compare)
        assert verdict_of(running.evidence, POLICY, compare=compare) == expected
        assert running.step_requests == sum(w.requests for w in seen_canary if w.second >= step_start)


def test_a_window_of_a_folded_second_is_refused() -> None:
    """The evidence cannot take a second back: a window for a second already folded is an error."""
    running = RunningEvidence(POLICY)
    running.fold([synthetic_window("web", "v2", 10, 5)], [synthetic_window("web", "v1", 12, 5)])
    assert running.unread_from(0) == 13
    with pytest.raises(ValueError, match="folded already"):
        running.fold([synthetic_window("web", "v2", 12, 5)], [])


def test_the_windows_of_a_second_are_merged_by_the_store_only() -> None:
    """A store returns one window per second; two windows of one second are refused, not added twice."""
    twice = [synthetic_window("web", "v2", 10, 5), synthetic_window("web", "v2", 10, 5)]
    with pytest.raises(ValueError, match="one per second"):
        evidence_of(twice, [], POLICY)


# --- the pass bounds since each SLO block: screened, yet the smallest of every block's ---------------------

# A block every second, so a few dozen seconds open a few dozen blocks.
MANY_BLOCKS = Policy(min_requests=50, warmup_s=0, slo_window_s=2, max_error_rate=0.05, max_p99_ms=60.0)


def histogram(latencies: list[float]) -> np.ndarray:
    counts = np.zeros(HISTOGRAM_SIZE)
    for latency in latencies:
        counts[index_of_value(latency)] += 1
    return counts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seconds=st.lists(
        st.tuples(
            st.integers(0, 300),
            st.integers(0, 30),
            st.integers(0, 600),
            st.integers(0, 30),
            st.sampled_from([2.0, 10.0, 40.0, 200.0]),
        ),
        min_size=1,
        max_size=40,
    ),
    seed=st.integers(0, 2**16),
)
def test_screened_pass_bounds_are_the_smallest_of_every_block(
    seconds: list[tuple[int, int, int, int, float]], seed: int
) -> None:
    """Skipping the blocks whose bound is surely not the smallest gives the minimum over every block."""
    rng = np.random.default_rng(seed)
    evidence = Evidence(MANY_BLOCKS)
    for canary_requests, canary_failed, baseline_requests, baseline_failed, latency in seconds:
        canary = list(rng.lognormal(math.log(latency), 0.6, canary_requests))
        baseline = list(rng.lognormal(math.log(20.0), 0.6, baseline_requests))
        evidence.add(
            ArmSecond(canary_requests, min(canary_failed, canary_requests), histogram(canary)),
            ArmSecond(baseline_requests, min(baseline_failed, baseline_requests), histogram(baseline)),
        )
    suffixes, alpha = evidence.suffixes(), MANY_BLOCKS.alpha
    alphas = [alpha / (k * (k + 1)) for k in suffixes.indexes.tolist()]
    rows = range(len(alphas))
    for whole in (math.inf, 1.0, 0.05, 0.01):
        every = [
            rate_upper_bound(int(suffixes.canary_failed[r]), int(suffixes.canary_requests[r]), alphas[r])
            for r in rows
        ]
        assert smallest_error_rate_bound(evidence, MANY_BLOCKS, whole) == min([whole, *every])
        excess = [
            rate_upper_bound(int(suffixes.canary_failed[r]), int(suffixes.canary_requests[r]), alphas[r] / 2)
            - rate_lower_bound(
                int(suffixes.baseline_failed[r]), int(suffixes.baseline_requests[r]), alphas[r] / 2
            )
            for r in rows
        ]
        assert smallest_error_excess_bound(evidence, MANY_BLOCKS, whole) == min([whole, *excess])
    p99s = []
    for row in rows:
        count = float(suffixes.canary_cumulative(row)[-1])
        if count > 0:
            rank = quantile_upper_rank(count, 0.99, alphas[row])
            p99s.append(_order_statistic(suffixes.canary_cumulative(row), rank, UPPER_EDGES))
    for whole in (math.inf, 1000.0, 60.0, 15.0):
        assert smallest_p99_bound(evidence, MANY_BLOCKS, whole) == min([whole, *p99s])


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_the_snapshots_give_each_blocks_latencies_exactly(weight: float) -> None:
    """The canary's histogram since each block's start, from the snapshots kept in their columns in use
    (whole counts as uint32, others as float64), is the sum of the seconds since that start."""
    rng = np.random.default_rng(5)
    evidence = Evidence(MANY_BLOCKS)
    seconds = []
    for second in range(30):
        latencies = list(rng.lognormal(math.log(2.0 + 10 * second), 0.8, 40))  # ever higher bins
        canary = histogram(latencies) * weight
        seconds.append(canary)
        evidence.add(ArmSecond(40, 0, canary), ArmSecond(100, 0, histogram(latencies)))
    suffixes = evidence.suffixes()
    assert suffixes.canary_before.dtype == (np.uint32 if weight == 1.0 else np.float64)
    assert suffixes.canary_before.shape[1] < HISTOGRAM_SIZE
    for row, index in enumerate(suffixes.indexes.tolist()):
        expected = np.cumsum(np.sum(seconds[index - 1 :], axis=0))
        assert np.array_equal(suffixes.canary_cumulative(row), expected)
        for bin_index in (0, 250, 400, HISTOGRAM_SIZE - 1, -1):
            assert suffixes.canary_cumulative_at(bin_index)[row] == expected[bin_index]
