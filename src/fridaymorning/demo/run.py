"""`fm demo`: a live canary of the sample service on the embedded defaults.

v1 is stable; v2 (good) is deployed and must be promoted; v3 (bad: about 8% HTTP 500 and 1.5 times the
latency) is deployed and must be rolled back. Real HAProxy, real collector, real SQLite, real
controller; the sample service runs as local processes and a traffic generator sends ~200 req/s.
With `--platform swarm` each version runs as a Docker Swarm service instead, from images the demo builds
first (demo/image.py: busybox FROM scratch, no registry needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from fridaymorning.analysis.verdict import Verdict, VerdictPhase
from fridaymorning.config import Config
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.loadgen.traffic import UNKNOWN_VERSION, TrafficGenerator
from fridaymorning.runtime import Runtime

RELEASES = (("v2", "promoted"), ("v3", "rolled_back"))
# A 5xx from these is a failed stable request: the healthy versions, and "unknown": an answer without a
# version, which in the demo only HAProxy itself gives (e.g. 503 when no server is available).
MUST_NOT_FAIL = ("v1", "v2", UNKNOWN_VERSION)
WARMUP_S = 3.0
PROGRESS_INTERVAL_S = 5.0
# Written into the state directory, so that a kept one can be read with `fm explain ID -c <this file>`.
CONFIG_FILE = "fridaymorning.yaml"
Say = Callable[[str], object]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class SwarmDemo:
    """Where `fm demo --platform swarm` runs: the platform URL of a Swarm manager ('swarm://' for the
    environment's Docker host), and the Docker hosts of the other nodes, which get the images by
    save/load (no registry)."""

    url: str = "swarm://"
    image_nodes: list[str] = field(default_factory=list)

    def platform(self) -> dict[str, Any]:
        from fridaymorning.demo.image import CONTAINER_PORT, IMAGE_REPOSITORY

        return {
            "url": self.url,
            "image": f"{IMAGE_REPOSITORY}:{{version}}",
            "container_port": CONTAINER_PORT,
            "image_nodes": self.image_nodes,
            "replicas": 2,
            "health_timeout_s": 180,
            "stop_grace_s": 2,
        }


def local_platform() -> dict[str, Any]:
    return {
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
    }


def demo_config(state_dir: Path, swarm: SwarmDemo | None = None) -> Config:
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
                    "platform": local_platform() if swarm is None else swarm.platform(),
                    "rollout": {
                        "steps": [
                            {"weight": 20, "min_requests": 150, **step},
                            {"weight": 50, "min_requests": 400, **step},
                        ]
                    },
                    # p50 and p90 against the baseline: at 20 canary req/s a p99 comparison needs
                    # longer than a demo should take to gather its evidence. On Swarm, p50 alone: a
                    # process forked per request (busybox CGI) makes the tail too noisy for a demo.
                    "analysis": {
                        "min_requests": 100,
                        "max_error_rate": 0.02,
                        # On Swarm each request forks a CGI process: on a busy host its p99 reaches
                        # about 1 s, well past what a Python demo app shows.
                        "max_p99_ms": 500 if swarm is None else 3000,
                        "quantiles": [0.5, 0.9] if swarm is None else [0.5],
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

    def __enter__(self) -> BackgroundTraffic:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Progress:
    """What one release has done so far, printed every PROGRESS_INTERVAL_S while it runs."""

    def __init__(self, version: str, traffic: BackgroundTraffic, steps: int) -> None:
        self.version = version
        self.traffic = traffic
        self.steps = steps
        self.started = time.monotonic()
        self.printed = self.started
        self.before = traffic.generator.snapshot()

    def due(self) -> bool:
        return time.monotonic() - self.printed >= PROGRESS_INTERVAL_S

    def line(self, state: RolloutState | None, verdict: Verdict | None) -> str:
        self.printed = time.monotonic()
        served = served_since(self.before, self.traffic.generator.snapshot())
        return progress_line(self.version, self.printed - self.started, state, self.steps, served, verdict)


def served_since(before: dict[str, dict[str, int]], now: dict[str, dict[str, int]]) -> dict[str, int]:
    """Requests answered per version between two tallies."""
    return {
        version: counts.get("requests", 0) - before.get(version, {}).get("requests", 0)
        for version, counts in sorted(now.items())
    }


def progress_line(
    version: str,
    elapsed_s: float,
    state: RolloutState | None,
    steps: int,
    served: dict[str, int],
    verdict: Verdict | None,
) -> str:
    """One line of progress, e.g. 'v2  12 s: progressing, step 1 of 2 at 20%; requests v1 1603, v2 398;
    judge: hold on p90_vs_baseline'."""
    where = "starting"
    if state is not None:
        where = str(state.phase)
        if state.phase is not RolloutPhase.STARTING:
            where += f", step {state.step_index + 1} of {steps} at {state.canary_weight}%"
    requests = ", ".join(f"{name} {count}" for name, count in served.items() if count) or "none yet"
    line = f"{version} {elapsed_s:3.0f} s: {where}; requests {requests}"
    if verdict is not None:
        line += f"; judge: {judge_summary(verdict)}"
    return line


def judge_summary(verdict: Verdict) -> str:
    """'pass', 'hold: 54 of 100 canary requests' while evidence gathers, or the phase and its checks."""
    if verdict.phase is VerdictPhase.PASS:
        return "pass"
    deciding = [check for check in verdict.checks if check.phase is verdict.phase]
    evidence = [check for check in deciding if check.name == "evidence"]
    if verdict.phase is VerdictPhase.HOLD and evidence:
        return f"hold: {evidence[0].detail}"
    names = ", ".join(check.name for check in deciding)
    return f"{verdict.phase} on {names}" if names else str(verdict.phase)


async def deploy_and_wait(
    runtime: Runtime, version: str, traffic: BackgroundTraffic, say: Say
) -> tuple[RolloutState, float]:
    """Deploy `version` and wait for its end, saying how it goes every few seconds. A held rollout waits
    for a person, who is not there in a demo: it is aborted, and reported as held, so the demo never hangs."""
    controller = runtime.controllers["web"]
    earlier_verdict = controller.last_verdict  # the previous rollout's: not shown for this one
    progress = Progress(version, traffic, len(controller.plan.steps))
    rollout = controller.deploy(version)
    while True:
        with contextlib.suppress(TimeoutError):
            final = await asyncio.wait_for(asyncio.shield(controller.wait()), timeout=1.0)
            assert final is not None
            return final, time.monotonic() - progress.started
        current = runtime.states.rollout(rollout.id)
        if current is not None and current.phase is RolloutPhase.HELD:
            controller.command(rollout.id, "abort")
            await controller.wait()
            return current, time.monotonic() - progress.started
        if progress.due():
            verdict = controller.last_verdict
            say(progress.line(current, verdict if verdict is not earlier_verdict else None))


async def run_demo(
    rate: float = 200.0, quiet: bool = False, console: Console | None = None, swarm: SwarmDemo | None = None
) -> dict[str, Any]:
    """Run the whole demo; the summary as `fm demo --json` prints it, plus "ok".

    Progress goes to `console`; when `quiet` (for --json) it goes to stderr and no tables are printed,
    so that standard output carries the JSON alone.
    """
    console = console or Console()
    progress_console = Console(stderr=True) if quiet else console

    def say(text: str) -> None:
        progress_console.print(text, soft_wrap=True, markup=False, highlight=False)

    with stop_on_signals():
        return await run_releases(rate, quiet, console, say, swarm)


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
    rate: float, quiet: bool, console: Console, say: Say, swarm: SwarmDemo | None = None
) -> dict[str, Any]:
    """Start everything, deploy each release, summarize, and stop everything.

    The state directory is removed when the demo succeeds or is interrupted. When it ends NOT OK, or
    fails, it is kept, and its path is said (and is in the JSON), so the rollouts can be explained.
    """
    state_dir = Path(tempfile.mkdtemp(prefix="fm-demo-"))
    keep = True
    try:
        result = await run_in(state_dir, rate, quiet, console, say, *([swarm] if swarm else []))
        keep = not result["ok"]
    except asyncio.CancelledError:
        keep = False
        raise
    finally:
        if keep:
            say(f"the demo's state is kept in {state_dir}: `fm explain ROLLOUT -c {state_dir / CONFIG_FILE}`")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
    if keep:
        result["state_dir"] = str(state_dir)
    return result


async def run_in(
    state_dir: Path, rate: float, quiet: bool, console: Console, say: Say, swarm: SwarmDemo | None = None
) -> dict[str, Any]:
    config = demo_config(state_dir, swarm)
    if swarm is not None:
        from fridaymorning.demo.image import build_images_at

        names = await asyncio.to_thread(build_images_at, swarm.url, ["v1", "v2", "v3"])
        say(f"built {', '.join(names)} on the Swarm manager")
    write_config(config, state_dir / CONFIG_FILE)
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
            final, seconds = await deploy_and_wait(runtime, version, traffic, say)
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


def write_config(config: Config, path: Path) -> None:
    """The demo's config as YAML: the settings it was built from, so `fm explain -c` can read the state."""
    settings = config.model_dump(mode="json", exclude_unset=True)
    path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")


def summarize(
    outcomes: Sequence[tuple[RolloutState, float]], tally: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """The demo's JSON: each release's outcome, time and reason, the traffic's tally, and "ok"."""
    releases: list[dict[str, Any]] = []
    for state, seconds in outcomes:
        release: dict[str, Any] = {
            "version": state.version,
            "rollout": state.id,
            "outcome": state.phase.value,
            "seconds": round(seconds, 1),
            "reason": state.reason,
        }
        if state.phase.value == "rolled_back":
            counts = tally.get(state.version, {})
            release["canary_requests"] = counts.get("requests", 0)
            release["canary_errors"] = counts.get("errors", 0)
        releases.append(release)
    failed_stable = sum(tally.get(version, {}).get("errors", 0) for version in MUST_NOT_FAIL)
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
