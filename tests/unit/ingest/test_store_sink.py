"""The collector's sink marks, behind each flush's windows, the seconds that are complete."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fridaymorning.ingest.store_sink import StoreSink
from fridaymorning.models import Window
from fridaymorning.testing import FakeClock, MemoryMetricStore, synthetic_window, wait_for


class MarkingStore(MemoryMetricStore):
    """A memory store that records writes and marks in one ordered log."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[object] = []

    def write(self, windows: Sequence[Window]) -> None:
        super().write(windows)
        self.log.append([window.second for window in windows])

    def mark_complete(self, complete_below: int) -> None:
        self.log.append(("mark", complete_below))

    def buffer_stats(self) -> dict[str, object]:
        return {"pending": 0}


async def test_each_delivery_is_followed_by_its_mark() -> None:
    """Windows popped at t with lateness L make every second below floor(t - L) complete."""
    clock = FakeClock(100.7)
    store = MarkingStore()
    sink = StoreSink(store, lateness_s=1.0, clock=clock)
    await sink([synthetic_window("web", "v1", 98, 3), synthetic_window("web", "v1", 99, 3)])
    assert store.log == [[98, 99], ("mark", 99)]
    assert sink.stats() == {"store_buffer": {"pending": 0}}


async def test_an_idle_collector_still_marks_the_seconds_that_passed() -> None:
    """Without traffic there is no window, yet the judge must learn that the seconds are complete."""
    clock = FakeClock(200.0)
    store = MarkingStore()
    sink = StoreSink(store, lateness_s=1.0, flush_interval_s=0.01, clock=clock)
    clock.now += 10.0
    task = asyncio.create_task(sink.heartbeat())
    try:
        await wait_for(lambda: store.log, "a heartbeat mark")
    finally:
        task.cancel()
    assert store.log[0] == ("mark", 208)


async def test_a_store_without_marks_just_gets_windows() -> None:
    """SQLite (no mark_complete, no buffer) gets its windows, no heartbeat, no buffer stats."""
    store = MemoryMetricStore()
    sink = StoreSink(store, lateness_s=1.0)
    await sink([synthetic_window("web", "v1", 5, 1)])
    await sink.heartbeat()  # returns at once
    assert len(store.windows) == 1 and sink.stats() == {}
