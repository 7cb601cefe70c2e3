"""The controller's judgement of a rollout: its evidence kept between ticks, folded from the metric store.

Each tick reads only the seconds closed since the last one and folds them into the rollout's
`RunningEvidence`; a new controller (after a restart) folds every stored second once, a chunk at a time.
This gives the verdict folding every second again would give (`judge.judge`, what `fm replay` does),
because a second the collector has written never changes: a late line counts in the oldest second
still open.

One exception: a collector process that starts again (it died, or `fm up` started a new one) does not
know which seconds its predecessor wrote, and stores a line delayed across its start into that line's
own, already written second. Such lines arrive until every request accepted before the start has ended
(HAProxy's longest timeout, COLLECTOR_RESTART_HORIZON_S). So once a collector started after the
evidence was last built from the store has run that long, the evidence is built again from the store,
once: from then on it holds every line written before.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from fridaymorning.analysis.evidence import Evidence, RunningEvidence
from fridaymorning.analysis.judge import verdict_of
from fridaymorning.analysis.policy import Policy
from fridaymorning.analysis.verdict import Verdict
from fridaymorning.controller.planner import Series
from fridaymorning.models import Window

# The most seconds read from the store at once: a restart folds a long rollout a chunk at a time, so
# that its windows are never all in memory together. Such a catch-up reads and folds in a worker thread
# (the event loop, which serves the API, waits at most the interpreter's switch interval); a tick's one
# new second is folded on the loop, and the verdict is always built there.
READ_CHUNK_S = 60

# How long after a collector process starts a line delayed across its start may still arrive: the
# longest request HAProxy lets run (the rendered `timeout client`/`timeout server`, 30 s), plus the
# collector's lateness and a flush.
COLLECTOR_RESTART_HORIZON_S = 60.0

Query = Callable[[str, str, int, int], list[Window]]


def read_chunks(first: int, end: int, size: int = READ_CHUNK_S) -> list[tuple[int, int]]:
    """The seconds [first, end) as consecutive ranges of at most `size` seconds (none when empty)."""
    return [(low, min(low + size, end)) for low in range(first, end, size)]


def must_rebuild(built_at: float, collector_started_at: float | None, now: float) -> bool:
    """Whether evidence last built from the store at `built_at` must be built again at `now`: a collector
    started since may have stored delayed lines into folded seconds, and all of them have arrived."""
    if collector_started_at is None:
        return False
    settled = collector_started_at + COLLECTOR_RESTART_HORIZON_S
    return built_at < settled <= now


def read_and_fold(running: RunningEvidence, series: Series, query: Query, start: int, end: int) -> None:
    """Read both series' windows of the seconds [start, end) and fold them in."""
    canary = query(series.canary_backend, series.canary_version, start, end)
    running.fold(canary, query(series.baseline_backend, series.baseline_version, start, end))


class KeptEvidence:
    """One service's running rollout's evidence, kept between the controller's ticks."""

    def __init__(
        self, policy: Policy, collector_started_at: Callable[[], float | None] | None = None
    ) -> None:
        self.policy = policy
        # When the running collector process started (wall clock); None: unknown, or long ago.
        self.collector_started_at = collector_started_at or (lambda: None)
        self._rollout: int | None = None
        self._running = RunningEvidence(policy)
        self._built_at = -math.inf
        self.rebuilds = 0  # builds from the store after the first, because a collector started

    @property
    def current(self) -> Evidence:
        """The evidence folded so far (of the rollout judged last)."""
        return self._running.evidence

    async def judge(
        self, rollout: int, series: Series, query: Query, start: int, end: int, step_start: int, now: float
    ) -> tuple[Verdict, int]:
        """The verdict on the seconds [start, end) of `rollout`, and the canary's requests from
        `step_start` on; reads only the seconds not folded yet. Raises what `query` raises."""
        if rollout != self._rollout or must_rebuild(self._built_at, self.collector_started_at(), now):
            if rollout == self._rollout:
                self.rebuilds += 1
            self._rollout, self._running, self._built_at = rollout, RunningEvidence(self.policy), now
        running = self._running
        first = running.unread_from(start)
        if step_start != running.step_start:
            counted = 0
            if step_start < first:  # the step began in seconds already folded (a clock that moved back)
                folded = await asyncio.to_thread(
                    query, series.canary_backend, series.canary_version, step_start, first
                )
                counted = sum(window.requests for window in folded)
            running.start_step(step_start, counted)
        chunks = read_chunks(first, end)
        if len(chunks) > 1:  # catching up after a restart: read and fold off the event loop
            for chunk_start, chunk_end in chunks:
                await asyncio.to_thread(read_and_fold, running, series, query, chunk_start, chunk_end)
        elif chunks:
            canary = await asyncio.to_thread(query, series.canary_backend, series.canary_version, *chunks[0])
            baseline = await asyncio.to_thread(
                query, series.baseline_backend, series.baseline_version, *chunks[0]
            )
            running.fold(canary, baseline)
        verdict = verdict_of(running.evidence, self.policy, compare=series.compare)
        return verdict, running.step_requests
