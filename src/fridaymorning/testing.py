"""Test doubles for fridaymorning's roles, for unit tests of pure logic and of the controller loop.

Integration tests use the real HAProxy, SQLite and processes; these fakes stand in for them where
the logic, not the component, is under test.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fridaymorning.errors import RouterError
from fridaymorning.models import Instance, ServerState, ServerStatus, Window
from fridaymorning.router import Share, weights_for_shares


class FakeRouter:
    """A Router that keeps servers in memory and records every share it was given.

    It refuses the shares HAProxyRouter refuses, and gives servers the weights HAProxy would.
    """

    def __init__(self) -> None:
        self.servers: dict[str, dict[str, ServerState]] = {}
        # Every set_shares call: the backend, and each arm's percent.
        self.share_history: list[tuple[str, dict[str, int]]] = []
        self.removed: list[str] = []
        self.down: set[str] = set()
        # The next this-many set_shares calls fail, as a HAProxy that times out would.
        self.failing_set_shares = 0

    async def ensure_backend(self, backend: str) -> None:
        self.servers.setdefault(backend, {})

    async def add_server(self, backend: str, server: str, address: str, port: int, weight: int = 0) -> None:
        servers = self.servers.setdefault(backend, {})
        if server in servers:
            raise RouterError(f"server {backend}/{server} already exists")
        servers[server] = ServerState(backend, server, ServerStatus.UP, weight, 0, 0, f"{address}:{port}")

    async def set_shares(self, backend: str, shares: Mapping[str, Share]) -> None:
        weights = weights_for_shares(shares)
        if self.failing_set_shares > 0:
            self.failing_set_shares -= 1
            raise RouterError("HAProxy did not answer 'set weight' in time")
        for server, weight in weights.items():
            state = self._server(backend, server)
            self.servers[backend][server] = ServerState(
                backend, server, state.status, weight, state.total_requests, 0, state.address
            )
        self.share_history.append((backend, {arm: share.percent for arm, share in shares.items()}))

    def percents_of(self, arm: str, backend: str | None = None) -> list[int]:
        """The percent each set_shares call gave `arm` (0 when it was not named), on `backend` or any."""
        return [
            percents.get(arm, 0)
            for where, percents in self.share_history
            if backend is None or where == backend
        ]

    async def drain(self, backend: str, server: str) -> None:
        self._server(backend, server)

    async def remove_server(self, backend: str, server: str) -> None:
        self._server(backend, server)
        del self.servers[backend][server]
        self.removed.append(server)

    async def server_states(self, backend: str) -> list[ServerState]:
        return [
            ServerState(s.backend, s.server, ServerStatus.DOWN, s.weight, s.total_requests, 0, s.address)
            if s.server in self.down
            else s
            for s in self.servers.get(backend, {}).values()
        ]

    def _server(self, backend: str, server: str) -> ServerState:
        try:
            return self.servers[backend][server]
        except KeyError:
            raise RouterError(f"no such server {backend}/{server}") from None


class FakePlatform:
    """A Platform whose instances are records; `fail_versions` never start."""

    def __init__(self, fail_versions: Sequence[str] = ()) -> None:
        self.running: list[Instance] = []
        self.stopped: list[Instance] = []
        self.fail_versions = set(fail_versions)
        self._ports = itertools.count(20000)

    async def start(self, version: str, replicas: int, label: str = "") -> list[Instance]:
        from fridaymorning.errors import PlatformError

        if version in self.fail_versions:
            raise PlatformError(f"{version} exited with status 1 before it was healthy")
        name = label or version
        first = 1 + max((i.index for i in self.running if (i.label or i.version) == name), default=0)
        started = [
            Instance(version, index, "127.0.0.1", next(self._ports), "fake", label)
            for index in range(first, first + replicas)
        ]
        self.running.extend(started)
        return started

    async def stop(self, instances: list[Instance]) -> None:
        for instance in instances:
            if instance in self.running:
                self.running.remove(instance)
                self.stopped.append(instance)

    async def health(self, instance: Instance) -> bool:
        return instance in self.running

    async def adopt(self) -> list[Instance]:
        """Instances survive a restart of the controller: the same ones are handed over."""
        return list(self.running)

    async def close(self) -> None:
        await self.stop(list(self.running))


class MemoryMetricStore:
    """A MetricStore in a list: windows written are served back, merged per second."""

    def __init__(self) -> None:
        self.windows: list[Window] = []
        self.fail_with: Exception | None = None

    def write(self, windows: Sequence[Window]) -> None:
        self.windows.extend(windows)

    def query(self, backend: str, version: str, start: int, end: int) -> list[Window]:
        if self.fail_with is not None:
            raise self.fail_with
        merged: dict[int, Window] = {}
        for window in self.windows:
            if window.backend == backend and window.version == version and start <= window.second < end:
                if window.second in merged:
                    merged[window.second].merge(window)
                else:
                    copy = Window(backend, version, window.second)
                    copy.merge(window)
                    merged[window.second] = copy
        return [merged[second] for second in sorted(merged)]

    def close(self) -> None:
        pass


def synthetic_window(
    backend: str, version: str, second: int, requests: int, failed: int = 0, latency_ms: float = 10.0
) -> Window:
    """A window of `requests` with `failed` 5xx answers, every one taking `latency_ms`."""
    window = Window(backend, version, second, requests=requests, failed=failed)
    window.status[1] = requests - failed
    window.status[4] = failed
    for _ in range(requests):
        window.tr.add(latency_ms)
        window.ta.add(latency_ms)
    return window


class FakeClock:
    """Virtual time for the controller: advanced by hand, one second per driven tick."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ControllerHarness:
    """A ServiceController on fakes, driven second by second with synthetic traffic.

    Each driven second writes what the collector would: the canary's windows (under the canary's
    backend) and the baseline's (under the fresh baseline's label when there is one), splitting
    `rps` by the rollout's weight. `restart()` replaces the controller as a kill -9 and a new
    `fm up` would: the old one vanishes without cleaning up; the new one adopts the instances.
    """

    def __init__(
        self,
        service: Any,
        state_path: str | Path,
        canary_failure_rate: float = 0.0,
        platform: FakePlatform | None = None,
        rps: int = 200,
        ab_share: float = 0.2,
    ) -> None:
        from fridaymorning.controller.state import StateStore

        self.service = service
        self.clock = FakeClock()
        self.router = FakeRouter()
        self.platform = platform or FakePlatform()
        self.metrics = MemoryMetricStore()
        self.states = StateStore(state_path)
        self.canary_failure_rate = canary_failure_rate
        self.rps = rps
        self.ab_share = ab_share
        self.controller = self._new_controller()

    def _new_controller(self) -> Any:
        from fridaymorning.controller.loop import ServiceController

        return ServiceController(
            self.service, self.router, self.platform, self.metrics, self.states, clock=self.clock
        )

    async def restart(self) -> None:
        """Kill the controller without cleanup, then start a new one on the surviving instances."""
        task = self.controller._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.controller = self._new_controller()
        await self.controller.start(await self.platform.adopt())

    async def drive(self, seconds: int, traffic: bool = True) -> None:
        """Advance virtual time second by second, writing windows as the collector would."""
        for _ in range(seconds):
            await asyncio.sleep(0.005)
            rollout = self.states.active_rollout(self.service.name)
            if traffic and rollout is not None:
                self._write_second(rollout, int(self.clock.now))
            self.clock.now += 1
            task = self.controller._task
            if rollout is None and task is not None and task.done():
                return

    def _write_second(self, rollout: Any, second: int) -> None:
        from fridaymorning.models import baseline_label

        controller = self.controller
        if controller.ab:
            canary = round(self.rps * self.ab_share) if controller.canary_instances else 0
        else:
            canary = self.rps * rollout.canary_weight // 100
        baseline_version = (
            baseline_label(rollout.baseline) if controller.baseline_instances else rollout.baseline
        )
        baseline = canary if controller.baseline_instances else self.rps - canary
        failed = round(canary * self.canary_failure_rate)
        if canary:
            self.metrics.write(
                [synthetic_window(controller.canary_backend, rollout.version, second, canary, failed)]
            )
        if baseline:
            self.metrics.write([synthetic_window(controller.backend, baseline_version, second, baseline)])


class WebhookReceiver:
    """A real HTTP server on a free loopback port that records webhook posts, and fails or stalls on demand.

    POSTs are recorded with their JSON body and answered 200, or 500 while `failures_left` > 0; with
    `stall_s` set they answer only after that long (or when the receiver closes). GETs answer 200 with
    X-Version: v2, like an instance of the canary. `most_in_flight` is the largest number of POSTs it was
    answering at once.
    """

    def __init__(self, path: str = "/hook") -> None:
        self.posts: list[dict[str, Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.get_paths: list[str] = []
        self.failures_left = 0
        self.stall_s = 0.0
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self.server.server_port}{path}"
        self.frontend = f"127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def _next_status(self) -> int:
        with self._lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                return 500
            return 200

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.posts.append(json.loads(body))
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
                try:
                    if receiver.stall_s:
                        receiver._closing.wait(receiver.stall_s)
                    self._answer(receiver._next_status())
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def do_GET(self) -> None:
                with receiver._lock:
                    receiver.get_paths.append(self.path)
                self._answer(200)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("X-Version", "v2")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler


# How long a test waits for an event (a phase, a log line, a weight read back) before it fails: sized for a
# machine whose cores are busy with other work, where what takes a second when idle can take thirty.
EVENT_DEADLINE_S = 120.0


async def wait_for(
    condition: Callable[[], Any], what: str, timeout_s: float = EVENT_DEADLINE_S, interval_s: float = 0.05
) -> Any:
    """Call `condition` (a function or a coroutine function) until it returns a true value; return that
    value. Past `timeout_s`, fail with AssertionError naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what} (last seen: {value!r})")
        await asyncio.sleep(interval_s)


def wait_for_sync(
    condition: Callable[[], Any], what: str, timeout_s: float = EVENT_DEADLINE_S, interval_s: float = 0.1
) -> Any:
    """wait_for, for tests without an event loop (those that drive `fm` processes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what} (last seen: {value!r})")
        time.sleep(interval_s)


# `fm` as a user runs it, with the interpreter of this environment.
FM = [sys.executable, "-m", "fridaymorning"]


def run_fm(
    *args: str, config: str | Path, timeout: float = EVENT_DEADLINE_S
) -> subprocess.CompletedProcess[str]:
    """Run one `fm` command with `--config`, capturing its output."""
    return subprocess.run(
        [*FM, *args, "--config", str(config)], capture_output=True, text=True, timeout=timeout, check=False
    )


class FmUpProcess:
    """`fm up` in a subprocess, waited for until its API answers. Its output goes to `<config>.up.log`."""

    def __init__(self, config: str | Path, timeout_s: float = EVENT_DEADLINE_S) -> None:
        import httpx
        import yaml

        self.config = Path(config)
        settings = yaml.safe_load(self.config.read_text())
        self.api = f"http://{settings['api']['listen']}/api/v1"
        self.frontend = f"http://{settings['services'][0]['frontend']}/"
        self.log_path = self.config.with_suffix(".up.log")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([*FM, "up", "--config", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"fm up exited: {self.log_path.read_text()}")
            try:
                httpx.get(self.api + "/status", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError(f"fm up did not answer within {timeout_s} s: {self.log_path.read_text()}")

    def stop(self) -> int:
        """SIGTERM, as a user's Ctrl-C or a service manager would; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=EVENT_DEADLINE_S)

    def kill(self) -> None:
        """kill -9: no cleanup at all, as in a crash."""
        self.process.kill()
        self.process.wait(timeout=10)


def descendants(pid: int) -> list[int]:
    """Pids of every live process whose parent chain reaches `pid`."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


# The demo app as a one-line program for tests and benchmarks: every request fails when the version's
# name starts with "broken"; otherwise it never fails; latency is a fifth of the demo's.
VERSIONED_APP = (
    "import os, runpy, sys\n"
    "port, version = sys.argv[1], sys.argv[2]\n"
    "os.environ['FM_DEMO_ERROR_RATE'] = '1' if version.startswith('broken') else '0'\n"
    "os.environ['FM_DEMO_LATENCY_FACTOR'] = '0.2'\n"
    "sys.argv = ['app', '--port', port, '--version', version]\n"
    "runpy.run_module('fridaymorning.demo.app', run_name='__main__')\n"
)
