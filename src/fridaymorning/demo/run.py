"""`fm demo`: a live canary of the sample service on the embedded defaults.

v1 is stable; v2 (good) is deployed and must be promoted; v3 (bad: about 8% HTTP 500 and 1.5 times the
latency) is deployed and must be rolled back. Real HAProxy, real collector, real SQLite, real
controller; the sample service runs as local processes and a traffic generator sends ~200 req/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fridaymorning.config import Config
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.demo.traffic import TrafficGenerator
from fridaymorning.runtime import Runtime

RELEASES = (("v2", "promoted"), ("v3", "rolled_back"))
HEALTHY_VERSIONS = ("v1", "v2")
WARMUP_S = 3.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def demo_config(state_dir: Path) -> Config:
    """Short steps so the demo finishes in about a minute, on free loopback ports."""
    # 20% first: at ~40 canary req/s the evidence for a pass gathers in well under a minute.
    step = {"min_duration_s": 8, "max_duration_s": 120}
    return Config.model_validate(
        {
            "state_dir": str(state_dir),
            "collector": {"listen": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}", "lateness_s": 1.0},
            "api": {"listen": f"127.0.0.1:{free_port()}"},
            "services": [
                {
                    "name": "web",
                    "frontend": f"127.0.0.1:{free_port()}",
                    "stable": "v1",
                    "platform": {
                        "command": [
                            sys.executable,
                            "-m",
                            "fridaymorning.demo.app",
                            "--port",
                            "{port}",
                            "--version",
                            "{version}",
                        ],
                        "replicas": 1,
                    },
                    "rollout": {
                        "steps": [
                            {"weight": 20, "min_requests": 150, **step},
                            {"weight": 50, "min_requests": 400, **step},
                        ]
                    },
                    # p50 and p90 against the baseline: at 20 canary req/s a p99 comparison needs
                    # longer than a demo should take to gather its evidence.
                    "analysis": {
                        "min_requests": 100,
                        "max_error_rate": 0.02,
                        "max_p99_ms": 500,
                        "quantiles": [0.5, 0.9],
                    },
                }
            ],
        }
    )


class BackgroundTraffic:
    """The traffic generator in a thread of its own, so its load does not slow the controller's loop."""

    def __init__(self, url: str, rate: float, headers: dict[str, str] | None = None) -> None:
        self.generator = TrafficGenerator(url, rate_per_s=rate, concurrency=32, headers=headers)
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)

    def _run(self) -> None:
        self._loop.run_until_complete(self.generator.run(self._stop))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, dict[str, int]]:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        return self.generator.snapshot()


async def deploy_and_wait(runtime: Runtime, version: str) -> tuple[RolloutState, float]:
    """Deploy `version` and wait for its end. A held rollout waits for a person, who is not there in a
    demo: it is aborted, and reported as held, so the demo never hangs."""
    controller = runtime.controllers["web"]
    started = time.monotonic()
    rollout = controller.deploy(version)
    while True:
        with contextlib.suppress(TimeoutError):
            final = await asyncio.wait_for(asyncio.shield(controller.wait()), timeout=1.0)
            assert final is not None
            return final, time.monotonic() - started
        current = runtime.states.rollout(rollout.id)
        if current is not None and current.phase is RolloutPhase.HELD:
            controller.command(rollout.id, "abort")
            await controller.wait()
            return current, time.monotonic() - started


async def run_demo(
    rate: float = 200.0, quiet: bool = False, console: Console | None = None
) -> dict[str, Any]:
    """Run the whole demo; the summary as `fm demo --json` prints it, plus "ok"."""
    console = console or Console()
    say: Callable[[str], object] = (lambda _: None) if quiet else console.print
    with stop_on_signals():
        return await run_releases(rate, quiet, console, say)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT or SIGTERM cancels the demo, so that its HAProxy and instances are stopped in order."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def run_releases(
    rate: float, quiet: bool, console: Console, say: Callable[[str], object]
) -> dict[str, Any]:
    """Start everything, deploy each release, summarize, and stop everything."""
    with tempfile.TemporaryDirectory(prefix="fm-demo-") as state_dir:
        config = demo_config(Path(state_dir))
        runtime = Runtime(config, announce=say)
        traffic: BackgroundTraffic | None = None
        try:
            await runtime.start()
            traffic = BackgroundTraffic(f"http://{config.services[0].frontend}/", rate)
            traffic.start()
            say(f"sending ~{rate:.0f} req/s to {config.services[0].frontend}")
            await asyncio.sleep(WARMUP_S)
            outcomes = []
            for version, _expected in RELEASES:
                say(f"deploying {version} …")
                final, seconds = await deploy_and_wait(runtime, version)
                say(f"{version}: {final.phase} after {seconds:.1f} s: {final.reason}")
                outcomes.append((final, seconds))
            tally = traffic.stop()
            traffic = None
            result = summarize(outcomes, tally)
            if not quiet:
                print_summary(console, runtime, outcomes, result)
        finally:
            if traffic is not None:
                traffic.stop()
            await runtime.stop()
    return result


def summarize(outcomes: list[tuple[RolloutState, float]], tally: dict[str, dict[str, int]]) -> dict[str, Any]:
    releases: list[dict[str, Any]] = []
    for state, seconds in outcomes:
        release: dict[str, Any] = {
            "version": state.version,
            "outcome": state.phase.value,
            "seconds": round(seconds, 1),
        }
        if state.phase.value == "rolled_back":
            counts = tally.get(state.version, {})
            release["canary_requests"] = counts.get("requests", 0)
            release["canary_errors"] = counts.get("errors", 0)
        releases.append(release)
    failed_stable = sum(tally.get(version, {}).get("errors", 0) for version in HEALTHY_VERSIONS)
    transport_errors = sum(counts.get("transport_errors", 0) for counts in tally.values())
    expected = [(version, outcome) for version, outcome in RELEASES]
    achieved = [(release["version"], release["outcome"]) for release in releases]
    return {
        "releases": releases,
        "requests": sum(counts.get("requests", 0) for counts in tally.values()),
        "failed_stable_requests": failed_stable,
        "transport_errors": transport_errors,
        "ok": achieved == expected and failed_stable == 0,
    }


def print_summary(
    console: Console, runtime: Runtime, outcomes: list[tuple[RolloutState, float]], result: dict[str, Any]
) -> None:
    table = Table(title="fm demo: releases")
    for column in ("version", "outcome", "seconds", "canary requests", "canary errors"):
        table.add_column(column)
    for release in result["releases"]:
        table.add_row(
            release["version"],
            release["outcome"],
            f"{release['seconds']:.1f}",
            str(release.get("canary_requests", "")),
            str(release.get("canary_errors", "")),
        )
    console.print(table)
    timeline = Table(title="timeline")
    for column in ("t (s)", "rollout", "event", "weight", "reason"):
        timeline.add_column(column)
    origin = min(state.started_at for state, _ in outcomes)
    for state, _ in outcomes:
        for event in runtime.states.events(state.id):
            if event["kind"] == "verdict":
                continue
            timeline.add_row(
                f"{event['at'] - origin:6.1f}",
                state.version,
                event["kind"],
                f"{event['canary_weight']}%",
                event["reason"],
            )
    console.print(timeline)
    console.print(
        f"requests: {result['requests']}, failed stable requests: {result['failed_stable_requests']}, "
        f"transport errors: {result['transport_errors']} → {'OK' if result['ok'] else 'NOT OK'}"
    )
