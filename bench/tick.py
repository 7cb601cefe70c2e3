"""Per-tick cost of judging a rollout, by the rollout's age. `python bench/tick.py [--quick] [--json]`.

What it measures: the CPU time (this process, `time.process_time`) of one judgement as the controller
makes it (controller.loop.ServiceController._measure without HAProxy): read the seconds closed since the
last judgement from a SQLite metric store, fold them into the rollout's kept evidence
(analysis.evidence.RunningEvidence) and build the verdict (analysis.judge.verdict_of). The store holds
1, 60 and 1,440 minutes of a rollout at 1000 req/s (a 10% canary: 100 req/s against 900, 0.1% errors,
lognormal latencies with p50 20 ms and p99 200 ms, in whole milliseconds as HAProxy logs them); each
tick adds one second, as a 1-second judge interval would.

What it compares against: the judgement before evidence was kept, which read and folded every second
since the rollout began on every tick (`judge.judge` over all the windows, what `fm replay` still
does), at 1 and 60 minutes. Also printed: the one-off rebuild from the store after a restart at each
age, and the memory the kept evidence holds (its numpy arrays) and the process's resident set size.

The target is at most 5 ms per tick at every age. The last line is one JSON object:
{"tick_ms": {"1": ..., "60": ..., "1440": ...}, "from_scratch_ms": {...}, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fridaymorning.analysis.evidence import Evidence, RunningEvidence
from fridaymorning.analysis.judge import judge, verdict_of
from fridaymorning.analysis.policy import Policy
from fridaymorning.controller.loop import read_chunks
from fridaymorning.models import Window
from fridaymorning.store.sqlite import SqliteMetricStore
from fridaymorning.testing import synthetic_window

AGES_MIN = (1, 60, 1440)
FROM_SCRATCH_AGES_MIN = (1, 60)
CANARY_RPS, BASELINE_RPS = 100, 900
TICKS = 20
START = 1_000_000
# Distinct per-second windows the store cycles through (building every second's sketch would take longer
# than the benchmark itself; the judge cannot tell).
VARIANTS = 60
COMPARES = "kept evidence, per tick, vs re-reading and re-folding every second on every tick (judge.judge)"


def second_variants(seed: int) -> list[tuple[Window, Window]]:
    """Canary and baseline windows of one second each, with random errors and latencies."""
    rng = np.random.default_rng(seed)
    variants = []
    for _ in range(VARIANTS):
        pair = []
        for version, requests in (("v2", CANARY_RPS), ("v1", BASELINE_RPS)):
            failed = int(rng.binomial(requests, 0.001))
            window = synthetic_window("web", version, 0, 0)
            window.requests, window.failed = requests, failed
            window.status[1], window.status[4] = requests - failed, failed
            for value in np.floor(rng.lognormal(np.log(20.0), 0.99, requests)):
                window.tr.add(float(value))
                window.ta.add(float(value))
            pair.append(window)
        variants.append((pair[0], pair[1]))
    return variants


def fill(store: SqliteMetricStore, first: int, end: int, variants: list[tuple[Window, Window]]) -> None:
    """Write both versions' windows of the seconds [first, end)."""
    batch: list[Window] = []
    for second in range(first, end):
        for window in variants[second % VARIANTS]:
            batch.append(
                Window(
                    window.backend,
                    window.version,
                    second,
                    window.requests,
                    window.status,
                    window.failed,
                    0,
                    window.tr,
                    window.ta,
                )
            )
        if len(batch) >= 4000:
            store.write(batch)
            batch = []
    store.write(batch)


def evidence_bytes(evidence: Evidence) -> int:
    """The bytes of the numpy arrays the evidence keeps (histograms of its totals, blocks and snapshots)."""
    blocks = [evidence.totals, *evidence.slo_blocks]
    kept = sum(block.canary_cumulative.nbytes + block.baseline_cumulative.nbytes for block in blocks)
    suffixes = evidence.suffixes()
    return kept + suffixes.counts.nbytes + suffixes.canary_before.nbytes


def rss_mb() -> float:
    """This process's resident set size now, in MB (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def cpu_ms(action: Callable[[], object]) -> float:
    """The CPU time `action` takes, in ms."""
    begin = time.process_time()
    action()
    return (time.process_time() - begin) * 1000.0


def read(store: SqliteMetricStore, first: int, end: int) -> tuple[list[Window], list[Window]]:
    """The canary's and the baseline's windows of the seconds [first, end), as the controller reads them."""
    return store.query("web", "v2", first, end), store.query("web", "v1", first, end)


def rebuild(store: SqliteMetricStore, running: RunningEvidence, policy: Policy, end: int) -> None:
    """The first judgement after a restart: every stored second folded once, a chunk at a time."""
    for chunk_start, chunk_end in read_chunks(START, end):
        running.fold(*read(store, chunk_start, chunk_end))
    verdict_of(running.evidence, policy)


def tick(store: SqliteMetricStore, running: RunningEvidence, policy: Policy, end: int) -> None:
    """One judgement: the seconds closed since the last one folded in, and the verdict."""
    running.fold(*read(store, running.unread_from(START), end))
    verdict_of(running.evidence, policy)


def from_scratch(store: SqliteMetricStore, policy: Policy, end: int) -> None:
    """One judgement as it was made before evidence was kept: every second read and folded again."""
    judge(*read(store, START, end), policy)


def measure_age(store: SqliteMetricStore, policy: Policy, age: int) -> dict[str, float]:
    """Rebuild, then TICKS ticks, at `age` minutes; from scratch too at FROM_SCRATCH_AGES_MIN."""
    end = START + age * 60
    running = RunningEvidence(policy)
    figures = {"rebuild_ms": cpu_ms(lambda: rebuild(store, running, policy, end))}
    ticks = [cpu_ms(partial(tick, store, running, policy, end + index + 1)) for index in range(TICKS)]
    figures["tick_ms"], figures["tick_ms_max"] = float(np.median(ticks)), max(ticks)
    figures["evidence_mb"] = evidence_bytes(running.evidence) / 1e6
    if age in FROM_SCRATCH_AGES_MIN:
        figures["from_scratch_ms"] = float(
            np.median([cpu_ms(lambda: from_scratch(store, policy, end)) for _ in range(3)])
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--quick", action="store_true", help="ages of 1 and 60 minutes only")
    arguments = parser.parse_args()
    ages = AGES_MIN[:2] if arguments.quick else AGES_MIN
    policy = Policy()
    variants = second_variants(7)
    results: dict[str, Any] = {"compares": COMPARES, "target_tick_ms": 5.0}
    for name in ("tick_ms", "tick_ms_max", "rebuild_ms", "evidence_mb", "rss_mb", "from_scratch_ms"):
        results[name] = {}
    if not arguments.json:
        print(
            f"a rollout at {CANARY_RPS + BASELINE_RPS} req/s ({CANARY_RPS} canary); {TICKS} one-second ticks"
        )
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteMetricStore(f"sqlite:///{directory}/metrics.db")
        written, rss_start = START, rss_mb()
        for age in ages:
            fill(store, written, START + age * 60 + TICKS, variants)
            written = START + age * 60 + TICKS
            figures = measure_age(store, policy, age)
            figures["rss_mb"] = rss_mb() - rss_start
            for name, value in figures.items():
                results[name][str(age)] = round(value, 2)
            if not arguments.json:
                print(describe(age, figures))
    results["load"] = os.getloadavg()[0]
    print(json.dumps(results))


def describe(age: int, figures: dict[str, float]) -> str:
    """One age's figures in words."""
    line = (
        f"{age:>5} min: tick {figures['tick_ms']:7.2f} ms (median; max {figures['tick_ms_max']:.2f}), "
        f"rebuild after a restart {figures['rebuild_ms']:8.0f} ms, evidence arrays "
        f"{figures['evidence_mb']:.2f} MB, RSS +{figures['rss_mb']:.0f} MB"
    )
    if "from_scratch_ms" in figures:
        line += f"; from scratch (before): {figures['from_scratch_ms']:.1f} ms"
    return line


if __name__ == "__main__":
    main()
