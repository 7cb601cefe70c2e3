"""The judge's cost per tick by the rollout's age, and the API's latency while it judges.

`python bench/tick.py [--json] [--quick] [--api-seconds S]`.

What it measures, on one SQLite metric store holding a rollout at 1000 req/s (a 10% canary: 100 req/s
against 900, 0.1% errors, lognormal latencies with p50 20 ms and p99 200 ms in whole milliseconds, as
HAProxy logs them):

- per tick, at 1, 60 and 1,440 minutes of the rollout's history: the CPU time (`time.process_time`,
  the store's reader threads included) of one judgement as the controller makes it
  (controller.judging.KeptEvidence.judge, which ServiceController._measure calls): read the second
  closed since the last tick, fold it into the kept evidence, build the verdict. The median of 20
  one-second ticks; the target is at most 5 ms at every age.
- compared against: the judgement from scratch at the same ages, as every tick made it before evidence
  was kept: every second since the rollout began read and folded again (here 60 s at a time, so that
  a day of windows is never in memory at once; `judge.judge`, what `fm replay` does, reads them all
  at once with the same CPU). This is also the one-off rebuild after a restart.
- memory: each age runs in a process of its own; its resident set size after the rebuild and the
  ticks, minus before them (RSS flat in the age is the target), and the bytes of the evidence's arrays.
- the API: a ServiceController (fake router and platform, the real store and judge) resumes a rollout
  1,440 minutes old on the event loop that also serves the real API (uvicorn); once the evidence is
  rebuilt, another process asks GET /api/v1/status 20 times a second for S seconds (default 30), and the
  p50/p99/max of its latencies are printed, beside the same with no rollout judged. Target: p99 < 50 ms.

The last line is one JSON object: {"tick_ms": {"1": …, "60": …, "1440": …}, "from_scratch_ms": {…},
"rss_mb": {…}, "evidence_mb": {…}, "api_ms": {…}, …}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fridaymorning.analysis.evidence import Evidence
from fridaymorning.analysis.policy import Policy
from fridaymorning.controller.judging import KeptEvidence
from fridaymorning.controller.planner import Series
from fridaymorning.models import Window
from fridaymorning.store.sqlite import SqliteMetricStore
from fridaymorning.testing import synthetic_window

AGES_MIN = (1, 60, 1440)
CANARY_RPS, BASELINE_RPS = 100, 900
TICKS = 20
START = 1_000_000
# Seconds written past the oldest age: the ticks, and the API's measurement after the rebuild.
SPARE_S = 1200
# Distinct per-second windows the store cycles through (building every second's sketch would take longer
# than the benchmark itself; the judge cannot tell).
VARIANTS = 60
SERIES = Series("web", "v2", "web", "v1", compare=True)
COMPARES = (
    "kept evidence per tick (controller.judging.KeptEvidence) vs every second read and folded again on "
    "every tick (the judgement before evidence was kept)"
)
API_RATE = 20


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


def fill(store: SqliteMetricStore, first: int, end: int) -> None:
    """Write both versions' windows of the seconds [first, end)."""
    variants = second_variants(7)
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


def rss_mb() -> float:
    """This process's resident set size now, in MB (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def evidence_bytes(evidence: Evidence) -> int:
    """The bytes of the numpy arrays the evidence keeps (its totals, open SLO blocks and snapshots)."""
    blocks = [evidence.totals, *evidence.slo_blocks]
    kept = sum(block.canary_cumulative.nbytes + block.baseline_cumulative.nbytes for block in blocks)
    suffixes = evidence.suffixes()
    return kept + suffixes.counts.nbytes + suffixes.canary_before.nbytes


async def cpu_ms(kept: KeptEvidence, store: SqliteMetricStore, end: int, rollout: int = 1) -> float:
    """The CPU time of one judgement of the seconds [START, end), in ms."""
    begin = time.process_time()
    await kept.judge(rollout, SERIES, store.query, START, end, START, now=float(end))
    return (time.process_time() - begin) * 1000.0


async def measure_age(path: str, age: int) -> dict[str, float]:
    """In a process of its own: the rebuild, TICKS ticks and the judgement from scratch at `age` minutes."""
    store = SqliteMetricStore(f"sqlite:///{path}")
    policy = Policy()
    end = START + age * 60
    await cpu_ms(KeptEvidence(policy), store, START + 10, rollout=0)  # imports scipy, warms the store
    rss_before = rss_mb()
    kept = KeptEvidence(policy)
    figures = {"rebuild_ms": await cpu_ms(kept, store, end)}
    ticks = [await cpu_ms(kept, store, end + index + 1) for index in range(TICKS)]
    figures["tick_ms"], figures["tick_ms_max"] = float(np.median(ticks)), max(ticks)
    figures["rss_mb"] = rss_mb() - rss_before
    figures["evidence_mb"] = evidence_bytes(kept.current) / 1e6
    repeats = 3 if age <= 60 else 1
    figures["from_scratch_ms"] = float(
        np.median([await cpu_ms(KeptEvidence(policy), store, end + TICKS) for _ in range(repeats)])
    )
    store.close()
    return figures


# --- the API while a day-old rollout is judged ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ask_status(url: str, seconds: float, stop: Any, results: Any) -> None:
    """In another process: GET `url` API_RATE times a second for `seconds`, or until `stop` is set; the
    latencies in ms."""
    import httpx

    latencies = []
    with httpx.Client(timeout=30.0) as client:
        deadline = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < deadline and not stop.is_set():
            begin = time.perf_counter()
            client.get(url).raise_for_status()
            latencies.append((time.perf_counter() - begin) * 1000.0)
            next_at += 1.0 / API_RATE
            time.sleep(max(0.0, next_at - time.monotonic()))
    results.put(latencies)


async def asked(url: str, seconds: float, until: Any = None) -> list[float]:
    """The latencies of asking `url` from another process for `seconds`, or until `until()` holds."""
    context = multiprocessing.get_context("spawn")
    results, stop = context.Queue(), context.Event()
    asking = context.Process(target=ask_status, args=(url, seconds, stop, results))
    asking.start()
    while asking.is_alive() and results.empty():
        if until is not None and until():
            stop.set()
        await asyncio.sleep(0.1)
    latencies: list[float] = await asyncio.to_thread(results.get)
    asking.join()
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "requests": len(latencies),
        "p50": statistics.median(latencies),
        "p99": float(np.percentile(latencies, 99)),
        "max": max(latencies),
    }


class BenchRuntime:
    """What the API needs of `fm up` (api.dependencies.RuntimeView), around one controller."""

    def __init__(self, controller: Any, states: Any, metrics: Any) -> None:
        self.controllers = {controller.service.name: controller}
        self.states, self.metrics = states, metrics

    def status(self) -> dict[str, Any]:
        return {"services": [c.snapshot() for c in self.controllers.values()], "collector": {}}

    async def reload_haproxy(self) -> None:
        """Nothing to reload: no HAProxy runs."""


class OffsetClock:
    """Wall-clock time shifted by `offset` seconds: the controller's clock, moved a day on at will."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset


async def api_latencies(path: str, state_dir: Path, seconds: float, judged: bool) -> dict[str, float]:
    """The API's latencies over `seconds` while a rollout 1,440 minutes old is judged (or none is)."""
    import uvicorn

    from fridaymorning.api.app import create_app
    from fridaymorning.config import ServiceConfig
    from fridaymorning.controller.loop import ServiceController
    from fridaymorning.controller.phases import RolloutPhase
    from fridaymorning.controller.state import StateStore
    from fridaymorning.testing import FakePlatform, FakeRouter

    service = ServiceConfig.model_validate(
        {
            "name": "web",
            "frontend": "127.0.0.1:8080",
            "stable": "v1",
            "platform": {"command": ["app", "{port}"]},
            # never complete the step: the rollout stays judged for the whole measurement
            "rollout": {
                "steps": [{"weight": 10, "min_duration_s": 0, "max_duration_s": 10**7, "min_requests": 10**9}]
            },
        }
    )
    store = SqliteMetricStore(f"sqlite:///{path}")
    states = StateStore(state_dir / f"state-{judged}.db")
    clock = OffsetClock(START - time.time())
    controller = ServiceController(
        service, FakeRouter(), FakePlatform(), store, states, clock=clock, data_lag_s=1.5
    )
    await controller.start()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(BenchRuntime(controller, states, store), "token"),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    figures: dict[str, float] = {}
    url = f"http://127.0.0.1:{port}/api/v1/status"
    if judged:
        rollout = controller.deploy("v2")
        while (states.rollout(rollout.id) or rollout).phase is not RolloutPhase.PROGRESSING:
            await asyncio.sleep(0.05)
        clock.offset += AGES_MIN[-1] * 60  # the rollout is a day old now
        begin = time.monotonic()

        def folded() -> bool:
            return controller.evidence.current.seconds >= AGES_MIN[-1] * 60

        during = await asked(url, 3600.0, until=folded)
        while not folded():
            await asyncio.sleep(0.1)
        figures["rebuild_s"] = time.monotonic() - begin
        figures.update({f"folding_{name}": value for name, value in summary(during).items()})
    rss_before = rss_mb()
    latencies = await asked(url, seconds)
    if judged:
        state = states.active_rollout("web")
        assert state is not None and state.phase is RolloutPhase.PROGRESSING, state
        figures["judged_s"] = controller.evidence.current.seconds
        figures["rss_growth_mb"] = rss_mb() - rss_before
    server.should_exit = True
    await serving
    await controller.stop()
    store.close()
    states.close()
    figures.update(summary(latencies))
    return figures


def child(arguments: argparse.Namespace) -> None:
    """The measurements that run in a process of their own; one JSON line."""
    if arguments.child == "age":
        print(json.dumps(asyncio.run(measure_age(arguments.store, arguments.age))))
    else:
        judged = arguments.child == "api-judged"
        state_dir = Path(arguments.store).parent
        print(
            json.dumps(asyncio.run(api_latencies(arguments.store, state_dir, arguments.api_seconds, judged)))
        )


def run_child(store: str, *extra: str) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, __file__, "--store", store, *extra], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--quick", action="store_true", help="ages of 1 and 60 minutes only, no API")
    parser.add_argument("--api-only", action="store_true", help="the API's latencies only")
    parser.add_argument("--api-seconds", type=float, default=30.0, help="how long the API is asked")
    parser.add_argument("--child", choices=("age", "api-judged", "api-idle"), help=argparse.SUPPRESS)
    parser.add_argument("--age", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments)
        return
    ages = AGES_MIN[:2] if arguments.quick and not arguments.api_only else AGES_MIN
    say = (lambda _: None) if arguments.json else print
    results: dict[str, Any] = {"compares": COMPARES, "target_tick_ms": 5.0, "target_api_p99_ms": 50.0}
    for name in ("tick_ms", "tick_ms_max", "from_scratch_ms", "rebuild_ms", "rss_mb", "evidence_mb"):
        results[name] = {}
    rates = f"{CANARY_RPS + BASELINE_RPS} req/s ({CANARY_RPS} canary)"
    say(f"a rollout at {rates}; {TICKS} one-second ticks per age")
    with tempfile.TemporaryDirectory() as directory:
        path = f"{directory}/metrics.db"
        store = SqliteMetricStore(f"sqlite:///{path}")
        fill(store, START, START + max(ages) * 60 + SPARE_S)
        store.close()
        for age in [] if arguments.api_only else ages:
            figures = run_child(path, "--child", "age", "--age", str(age))
            for name, value in figures.items():
                results[name][str(age)] = round(value, 2)
            say(describe(age, figures))
        if not arguments.quick:
            seconds = str(arguments.api_seconds)
            idle = run_child(path, "--child", "api-idle", "--api-seconds", seconds)
            judged = run_child(path, "--child", "api-judged", "--api-seconds", seconds)
            results["api_ms"] = {"idle": rounded(idle), "judged_1440": rounded(judged)}
            say(f"API GET /api/v1/status, {API_RATE}/s for {seconds} s:")
            say(f"  no rollout: {latencies(idle)}")
            say(f"  a 1,440-minute rollout judged every second: {latencies(judged)}")
            rebuild, growth = judged["rebuild_s"], judged["rss_growth_mb"]
            folding = {
                name[len("folding_") :]: v for name, v in judged.items() if name.startswith("folding_")
            }
            say(f"  while its stored seconds were folded after a restart: {latencies(folding)}")
            say(f"  (after folding its stored seconds in {rebuild:.1f} s; RSS since: +{growth:.1f} MB)")
    results["load"] = os.getloadavg()[0]
    print(json.dumps(results))


def latencies(figures: dict[str, float]) -> str:
    return f"p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms, max {figures['max']:.1f} ms"


def rounded(figures: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 2) for name, value in figures.items()}


def describe(age: int, figures: dict[str, float]) -> str:
    """One age's figures in words."""
    return (
        f"{age:>5} min: tick {figures['tick_ms']:6.2f} ms (median; max {figures['tick_ms_max']:.2f}); "
        f"from scratch (before) {figures['from_scratch_ms']:9.1f} ms; RSS +{figures['rss_mb']:.1f} MB, "
        f"evidence arrays {figures['evidence_mb']:.2f} MB"
    )


if __name__ == "__main__":
    main()
