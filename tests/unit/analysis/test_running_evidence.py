"""Evidence kept between judgements gives the same verdicts as folding every stored second again."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fridaymorning.analysis.evidence import RunningEvidence
from fridaymorning.analysis.judge import judge, verdict_of
from fridaymorning.analysis.policy import Policy
from fridaymorning.controller.loop import read_chunks
from fridaymorning.models import Window
from fridaymorning.testing import synthetic_window

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


def windows_of(version: str, seconds: list[tuple[int, int, float] | None], copies: int) -> list[Window]:
    """The stored windows of a version, from second 100 on; `copies` collectors write each second."""
    windows = []
    for offset, traffic in enumerate(seconds):
        if traffic is None:
            continue
        requests, failed, latency_ms = traffic
        for _ in range(copies):
            windows.append(
                synthetic_window("web", version, 100 + offset, requests, min(failed, requests), latency_ms)
            )
    return windows


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
    canary_windows, baseline_windows = windows_of("v2", canary, copies), windows_of("v1", baseline, copies)
    start = 100
    running = RunningEvidence(POLICY)
    for end in sorted({100 + cut for cut in cuts} | {146}):
        if step_start != running.step_start:
            first = running.unread_from(start)
            counted = sum(w.requests for w in canary_windows if step_start <= w.second < first)
            running.start_step(step_start, counted)
        first = running.unread_from(start)
        running.fold(
            [w for w in canary_windows if first <= w.second < end],
            [w for w in baseline_windows if first <= w.second < end],
        )
        seen_canary = [w for w in canary_windows if start <= w.second < end]
        seen_baseline = [w for w in baseline_windows if start <= w.second < end]
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


def test_a_restart_reads_the_stored_seconds_in_chunks() -> None:
    """The seconds since the rollout began are read in consecutive chunks that cover them exactly."""
    assert read_chunks(0, 1300, 600) == [(0, 600), (600, 1200), (1200, 1300)]
    assert read_chunks(7, 8, 600) == [(7, 8)]
    assert read_chunks(9, 9, 600) == []
