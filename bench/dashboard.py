"""Do open dashboards slow the controller? `python bench/dashboard.py [--seconds S] [--clients N]`.

One real `fm up` (in this process: HAProxy, the collector, the controller, the API) runs a rollout of
the versioned demo app held at its first step (30%) under 100 requests per second. The controller's
ticks (judging, weight changes) and the dashboard's live feed share one event loop, so the figure is the
lateness of that loop's ticks: a 50 ms timer on the loop, how late each wake-up comes. It is measured
for S seconds with no dashboard open (the baseline this compares against), then for S seconds with N
dashboards (default 20) holding the live event stream open, each read by a client in another process.

Prints a table, then exactly one JSON line:
{"clients": {"0": {"ticks", "late_ms_p50", "late_ms_p99", "late_ms_max"}, "20": {..., "messages"}},
 "seconds": S}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from fridaymorning.config import Config
from fridaymorning.demo.run import BackgroundTraffic, free_port
from fridaymorning.runtime import Runtime
from fridaymorning.testing import quick_service, quick_settings

TIMER_S = 0.05
RATE = 100


def bench_config(state_dir: Path) -> Config:
    step = {"weight": 30, "min_duration_s": 3600, "max_duration_s": 7200, "min_requests": 50}
    return Config.model_validate(
        quick_settings(
            state_dir,
            quick_service("web", f"127.0.0.1:{free_port()}", steps=[step]),
            collector={"listen": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}", "lateness_s": 0.5},
            api=f"127.0.0.1:{free_port()}",
        )
    )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def lateness(seconds: float) -> list[float]:
    """How late (ms) a TIMER_S timer on this loop wakes, for `seconds` seconds."""
    late = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        asked = time.monotonic()
        await asyncio.sleep(TIMER_S)
        late.append((time.monotonic() - asked - TIMER_S) * 1000)
    return late


class Dashboards:
    """N open dashboards: clients of the live event stream in a process of their own, so that reading
    the streams takes nothing from the measured process but the serving."""

    def __init__(self, base: str, token: str, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.messages = context.Value("i", 0)
        self.connected = context.Value("i", 0)
        self.stop = context.Event()
        self.process = context.Process(
            target=read_streams, args=(base, token, count, self.messages, self.connected, self.stop)
        )


def read_streams(base: str, token: str, count: int, messages: Any, connected: Any, stop: Any) -> None:
    """In the clients' process: log in once, open `count` event streams, count their messages."""

    async def read(client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "/dashboard/api/events") as stream:
            with connected.get_lock():
                connected.value += 1
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    with messages.get_lock():
                        messages.value += 1

    async def run() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=None) as client:
            await client.post("/login", data={"token": token})
            tasks = [asyncio.create_task(read(client)) for _ in range(count)]
            while not stop.is_set():
                await asyncio.sleep(0.1)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


def summary(late: list[float]) -> dict[str, Any]:
    return {
        "ticks": len(late),
        "late_ms_p50": round(percentile(late, 0.5), 2),
        "late_ms_p99": round(percentile(late, 0.99), 2),
        "late_ms_max": round(max(late), 2),
    }


async def main_async(seconds: float, clients: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="fm-bench-dashboard-"))
    config = bench_config(directory / "state")
    runtime = Runtime(config)
    traffic = BackgroundTraffic(f"http://{config.services[0].frontend}/", rate=RATE)
    try:
        await runtime.start()
        traffic.start()
        controller = runtime.controllers["web"]
        rollout = controller.deploy("v2")
        while (state := runtime.states.rollout(rollout.id)) is None or state.phase != "progressing":
            await asyncio.sleep(0.1)
        await asyncio.sleep(3)  # the canary's first seconds reach the store
        results = {"0": summary(await lateness(seconds))}
        token = (config.state_path() / "api-token").read_text().strip()
        dashboards = Dashboards(f"http://{config.api.listen}", token, clients)
        dashboards.process.start()
        while dashboards.connected.value < clients:
            await asyncio.sleep(0.05)
        results[str(clients)] = {**summary(await lateness(seconds)), "messages": dashboards.messages.value}
        dashboards.stop.set()
        await asyncio.to_thread(dashboards.process.join, 10)
        return results
    finally:
        traffic.stop()
        await runtime.stop()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds measured per case")
    parser.add_argument("--clients", type=int, default=20, help="open dashboards in the second case")
    args = parser.parse_args()
    results = asyncio.run(main_async(args.seconds, args.clients))
    print(f"{'dashboards':>10} {'ticks':>6} {'late p50 ms':>12} {'late p99 ms':>12} {'late max ms':>12}")
    for count, row in results.items():
        print(
            f"{count:>10} {row['ticks']:>6} {row['late_ms_p50']:>12} {row['late_ms_p99']:>12} "
            f"{row['late_ms_max']:>12}"
        )
    print(json.dumps({"clients": results, "seconds": args.seconds}), flush=True)


if __name__ == "__main__":
    main()
