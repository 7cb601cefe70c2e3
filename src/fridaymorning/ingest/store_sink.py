"""The collector's sink into a metric store, with the marks a buffered store needs.

A store that writes through a buffer (InfluxDB, VictoriaMetrics) cannot tell by itself which seconds
are complete: windows may still wait in its buffer, and a second without traffic has no window at all.
So after each flush the collector tells it: "every window of a second below N was handed to you"
(`mark_complete(N)`), in the same thread call as the windows, so the mark is queued behind them. While
no traffic comes, a heartbeat marks the seconds that have passed. A store without `mark_complete`
(SQLite writes synchronously) just gets its windows.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from fridaymorning.models import Window


class StoreSink:
    """Hands windows to `store.write` off the event loop, and marks complete seconds when it can."""

    def __init__(
        self,
        store: Any,
        lateness_s: float,
        flush_interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._lateness_s = lateness_s
        self._flush_interval_s = flush_interval_s
        self._clock = clock
        self._mark: Callable[[int], None] | None = getattr(store, "mark_complete", None)
        self._lock = asyncio.Lock()
        self._last_delivery = clock()

    async def __call__(self, windows: Sequence[Window]) -> None:
        # The collector popped these windows just now, with this clock: all seconds below
        # now - lateness are in them or were delivered before.
        complete_below = math.floor(self._clock() - self._lateness_s)
        async with self._lock:
            await asyncio.to_thread(self._write, windows, complete_below)
            self._last_delivery = self._clock()

    def _write(self, windows: Sequence[Window], complete_below: int) -> None:
        self._store.write(windows)
        if self._mark is not None:
            self._mark(complete_below)

    async def heartbeat(self) -> None:
        """While no windows come, mark the seconds that passed (a flush interval and a half behind)."""
        if self._mark is None:
            return
        while True:
            await asyncio.sleep(self._flush_interval_s)
            async with self._lock:
                now = self._clock()
                if now - self._last_delivery >= self._flush_interval_s * 1.5:
                    margin = self._lateness_s + self._flush_interval_s * 1.5
                    await asyncio.to_thread(self._mark, math.floor(now - margin))

    def stats(self) -> dict[str, Any]:
        """The store's buffer counters under "store_buffer", when the store has a buffer."""
        buffer_stats = getattr(self._store, "buffer_stats", None)
        return {"store_buffer": buffer_stats()} if buffer_stats is not None else {}
