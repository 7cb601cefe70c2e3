"""The controller's kept evidence: the seconds closed since the last tick, folded from the store."""

from __future__ import annotations

import asyncio

from fridaymorning.analysis.judge import judge
from fridaymorning.analysis.policy import Policy
from fridaymorning.controller.judging import (
    COLLECTOR_RESTART_HORIZON_S,
    KeptEvidence,
    must_rebuild,
    read_chunks,
)
from fridaymorning.controller.planner import Series
from fridaymorning.models import Window
from fridaymorning.testing import MemoryMetricStore, synthetic_window

POLICY = Policy(min_requests=50, warmup_s=4, slo_window_s=6, max_error_rate=0.05, max_p99_ms=60.0)
SERIES = Series("web", "v2", "web", "v1", compare=True)


class CountingStore(MemoryMetricStore):
    """A MemoryMetricStore that records the seconds each query asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[int, int]] = []

    def query(self, backend: str, version: str, start: int, end: int) -> list[Window]:
        self.asked.append((start, end))
        return super().query(backend, version, start, end)


def fill(store: MemoryMetricStore, first: int, end: int, canary_failed: int = 0) -> None:
    for second in range(first, end):
        store.write([synthetic_window("web", "v2", second, 20, canary_failed, 12.0)])
        store.write([synthetic_window("web", "v1", second, 180, 0, 12.0)])


def test_a_restart_reads_the_stored_seconds_in_chunks() -> None:
    """The seconds since the rollout began are read in consecutive chunks that cover them exactly."""
    assert read_chunks(0, 1300, 600) == [(0, 600), (600, 1200), (1200, 1300)]
    assert read_chunks(7, 8, 600) == [(7, 8)]
    assert read_chunks(9, 9, 600) == []


def test_each_tick_reads_only_the_seconds_closed_since_the_last() -> None:
    """Tick by tick, the store is asked for the new seconds only, and the verdict and the step's canary
    requests are those of judging every second again."""
    store = CountingStore()
    fill(store, 100, 160)
    kept = KeptEvidence(POLICY)

    async def ticks() -> None:
        read_up_to = 100
        for end in (110, 111, 130, 160):
            store.asked.clear()
            verdict, step_requests = await kept.judge(1, SERIES, store.query, 100, end, 120, now=float(end))
            assert store.asked == [(read_up_to, end), (read_up_to, end)]  # the canary's, the baseline's
            read_up_to = end
            expected = judge(store.query("web", "v2", 100, end), store.query("web", "v1", 100, end), POLICY)
            assert verdict == expected
            assert step_requests == 20 * max(0, end - 120)

    asyncio.run(ticks())


def test_another_rollout_starts_from_its_own_first_second() -> None:
    store = MemoryMetricStore()
    fill(store, 100, 140, canary_failed=5)
    kept = KeptEvidence(POLICY)

    async def ticks() -> None:
        await kept.judge(1, SERIES, store.query, 100, 120, 100, now=120.0)
        verdict, _ = await kept.judge(2, SERIES, store.query, 125, 140, 125, now=140.0)
        assert verdict == judge(
            store.query("web", "v2", 125, 140), store.query("web", "v1", 125, 140), POLICY
        )

    asyncio.run(ticks())


def test_a_restarted_collector_makes_the_evidence_rebuilt_once_its_delayed_lines_are_in() -> None:
    """A collector started after the evidence was built may store delayed lines into folded seconds: once
    it has run COLLECTOR_RESTART_HORIZON_S, the evidence is built again from the store, once."""
    store = MemoryMetricStore()
    fill(store, 100, 200)
    started: list[float | None] = [None]
    kept = KeptEvidence(POLICY, collector_started_at=lambda: started[0])

    async def tick(end: int) -> object:
        verdict, _ = await kept.judge(1, SERIES, store.query, 100, end, 100, now=float(end))
        return verdict

    async def ticks() -> None:
        await tick(150)
        started[0] = 150.0  # a new collector stores errors delayed across its start into second 120
        store.write([synthetic_window("web", "v2", 120, 20, 20, 12.0)])
        before = await tick(150 + int(COLLECTOR_RESTART_HORIZON_S) - 1)
        assert kept.rebuilds == 0
        after = await tick(150 + int(COLLECTOR_RESTART_HORIZON_S))
        end = 150 + int(COLLECTOR_RESTART_HORIZON_S)
        assert kept.rebuilds == 1
        assert after == judge(store.query("web", "v2", 100, end), store.query("web", "v1", 100, end), POLICY)
        assert before != after
        await tick(end + 5)
        assert kept.rebuilds == 1

    asyncio.run(ticks())


def test_when_the_evidence_must_be_rebuilt() -> None:
    horizon = COLLECTOR_RESTART_HORIZON_S
    assert not must_rebuild(10.0, None, 1000.0)  # an adopted collector, or none
    assert not must_rebuild(10.0, 5.0, 5.0 + horizon - 1)  # delayed lines may still come
    assert must_rebuild(10.0, 5.0, 5.0 + horizon)
    assert not must_rebuild(5.0 + horizon, 5.0, 5.0 + horizon + 1)  # built after they all came
