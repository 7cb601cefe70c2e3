"""Fault-injection benchmark: figures, not pass/fail. `python bench/faults.py [--quick] [--json]`.

Every trial runs a real `fm up` (or, for the collector trial, an in-process Runtime) with a real HAProxy
and the versioned demo app on loopback, under steady paced traffic (BackgroundTraffic, ~150 req/s),
each on a fresh temporary state directory and free ports. Faults injected:

* kill9: `kill -9` of `fm up` with the rollout in a given phase (starting: a pre_rollout hook sleeps;
  progressing; awaiting_approval: an `approval: true` step; paused: `pause`; held: a tiny max_duration
  and a huge min_requests; promoting / aborting / rolling_back: killed the moment the state DB shows
  the transient phase after `promote?full=true`, `abort`, or a canary answering 500). After ~2 s with
  the data plane alone, `fm up` is started again on the same config; the trial counts as resumed when
  the new `fm up` recorded a `resumed` event ("controller restarted") and the rollout then reached the
  expected end (a person's action is sent when it waits for one). The phase persisted at the kill is
  read from the state DB after the kill and cross-checked with the `resumed` event.
  Log lines: once the traffic stopped, the requests HAProxy counted for the backend (BACKEND `stot`)
  against the requests stored in the metric store: `log_lines_lost`; and what was lost beyond what
  `fm status` reported (the collector's `lost_across_restart` + the reconciliation's `missing_lines`):
  `log_lines_lost_unreported`, whose target is 0. (The collector runs in its own process, which a
  kill -9 of `fm up` does not reach; `collector_pid_kept` says the same process served throughout.)
  `progressing+collector` also kills the collector process: its lines are lost until the next `fm up`
  starts another, which must count them (`lost_across_restart`).
* canary_crash: `kill -9` of the canary instance in step 1 (pid of the process listening on its port,
  found through /proc/net/tcp and /proc/*/fd, cross-checked with local-instances.json). The admin
  socket's `show stat` is polled every 20 ms: seconds until HAProxy says DOWN, and the growth of the
  server's `stot` after that moment; then the controller must roll back.
* haproxy_reload: SIGUSR2 to HAProxy's master (the `pidfile` of the rendered haproxy.cfg) in step 1;
  servers and weights before and after the new worker answers, failed requests around the reload, and
  whether the rollout then goes on to promotion by itself.
* no_data: an in-process Runtime whose collector is stopped (`await runtime.collector.stop()`) in step
  1 or step 2 while traffic flows; the rollout must never be promoted (held, or still progressing,
  within the steps' max durations).

* fleet: three HAProxy instances, each in a network namespace of its own (fridaymorning.fleetlab; needs
  root), brought to an in-process Runtime through `haproxy.instances`; plain requests to each
  instance's frontend throughout. Instance lb2 is killed (SIGKILL) in step 1: seconds until `fm status`
  shows it lagging and until the rollout holds naming it; then it is started again (with its file) and
  the rollout must promote with the same weights read back on all three. Failed requests through lb1
  and lb3 are the fleet's `failed_stable_requests` (lb2's, while dead, are reported apart).

"Failed stable requests" counts what the traffic generator saw go wrong outside a broken canary: HTTP
5xx of the healthy versions (v1, v2), 5xx without an X-Version header (HAProxy's own answers), and
requests with no answer at all (tallied under "none", since their server is unknown).

Prints a table (to stderr with --json), then exactly one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml

from fridaymorning.client import TOKEN_FILE
from fridaymorning.config import Config
from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.fleetlab import (
    TeamHAProxy,
    app_command,
    create_namespaces,
    instance_config,
    remove_namespaces,
    requests_while,
)
from fridaymorning.loadgen.traffic import NO_VERSION, VERSION_HEADER, TrafficGenerator
from fridaymorning.procfs import pids, process_alive, read_cmdline, read_environ, read_pid
from fridaymorning.router import HAProxyRouter
from fridaymorning.router.brought import write_include_file
from fridaymorning.router.process import PIDFILE_LINE, runs_haproxy_master
from fridaymorning.runtime import Runtime
from fridaymorning.testing import VERSIONED_APP, FmUpProcess

HAPROXY = (
    shutil.which("haproxy", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    or "/usr/sbin/haproxy"
)
RATE = 150.0  # requests per second through the service's frontend
START_TIMEOUT_S = 120.0  # a loaded machine can take half a minute to start fm up
OUTAGE_S = 2.0  # how long the data plane serves alone after kill -9 of fm up
MARK = "FM_FAULTS_BENCH"  # environment variable every process we start inherits (found in /proc/*/environ)
TERMINAL = {"promoted", "rolled_back", "aborted"}
SERVICE = "web"


LONG_STEP = {"weight": 30, "min_duration_s": 600, "max_duration_s": 900, "min_requests": 50}
SLEEPING_HOOK_S = 6
HOOK_SCRIPT = f"import time; time.sleep({SLEEPING_HOOK_S})  # fm-faults pre_rollout hook"


def hook_processes(prefix: str) -> list[int]:
    """Our pre_rollout hooks running now."""
    return [pid for pid in marked_processes(prefix) if "fm-faults pre_rollout hook" in describe(pid, 400)]


OUT = sys.stdout  # the table and progress; stderr with --json, so stdout holds the JSON line alone


def say(*parts: object) -> None:
    print(*parts, file=OUT, flush=True)


# --------------------------------------------------------------------------------------------------
# Set-up: configs, processes, ports
# --------------------------------------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def settings(
    directory: Path, steps: list[dict[str, Any]], hooks: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A one-service config of the versioned demo app on free loopback ports, in `directory`."""
    document = {
        "state_dir": str(directory / "state"),
        "haproxy": {"binary": HAPROXY},
        "collector": {
            "listen": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
            "lateness_s": 0.5,
            "reconcile_interval_s": 5,
        },
        "api": {"listen": f"127.0.0.1:{free_port()}"},
        "services": [
            {
                "name": SERVICE,
                "frontend": f"127.0.0.1:{free_port()}",
                "stable": "v1",
                "platform": {
                    "command": [sys.executable, "-c", VERSIONED_APP, "{port}", "{version}"],
                    "stop_grace_s": 2,
                },
                "rollout": {"steps": steps},
                "analysis": {"min_requests": 50, "quantiles": [0.5], "latency_tolerance": 1.5},
                "hooks": hooks or [],
            }
        ],
    }
    Config.model_validate(document)  # a mistake here should fail before anything starts
    return document


def set_mark(run_id: str, trial: str) -> str:
    """Label every process started from now on (they inherit our environment) with `run_id/trial`."""
    mark = f"{run_id}/{trial}"
    os.environ[MARK] = mark
    return mark


def marked_processes(prefix: str) -> list[int]:
    """Live (non-zombie) processes but us whose environment has MARK=<a value starting with prefix>."""
    needle = f"{MARK}={prefix}".encode()
    return [
        pid
        for pid in pids()
        if pid != os.getpid()
        and any(variable.startswith(needle) for variable in read_environ(pid) or ())
        and process_alive(pid)
    ]


def describe(pid: int, limit: int = 80) -> str:
    argv = read_cmdline(pid)
    return " ".join(argv)[:limit] if argv else "?"


def reap_marked(prefix: str, wait_s: float = 5.0) -> list[str]:
    """Wait for our processes to end; SIGKILL those still there after `wait_s`. Their descriptions."""
    deadline = time.monotonic() + wait_s
    while marked_processes(prefix) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftovers = [f"{pid} {describe(pid)}" for pid in marked_processes(prefix)]
    for pid in marked_processes(prefix):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return leftovers


def listening_pid(port: int) -> int | None:
    """The pid of the process listening on TCP `port` (loopback), through /proc/net/tcp and /proc/*/fd."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for pid in pids():
        try:
            descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for descriptor in descriptors:
            with contextlib.suppress(OSError):
                if os.readlink(descriptor) in inodes:
                    return pid
    return None


def wait_for(check: Callable[[], Any], timeout_s: float, interval_s: float = 0.1) -> Any:
    """The first truthy value of `check()` within `timeout_s`, else None."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.HTTPError, OSError):
            value = check()
            if value:
                return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval_s)


def failed_requests(tally: dict[str, dict[str, int]]) -> dict[str, int]:
    """Failures outside a broken canary: healthy versions' 5xx, HAProxy's own 5xx, and no answer at all."""
    healthy = sum(
        c["errors"] for v, c in tally.items() if v not in ("none", "unknown") and not v.startswith("broken")
    )
    unknown = tally.get("unknown", {}).get("errors", 0)
    transport = sum(c["transport_errors"] for c in tally.values())
    return {
        "http_5xx": healthy,
        "haproxy_5xx": unknown,
        "no_answer": transport,
        "total": healthy + unknown + transport,
    }


def tally_diff(
    after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    return {
        version: {key: value - before.get(version, {}).get(key, 0) for key, value in counts.items()}
        for version, counts in after.items()
    }


class TimedTraffic(TrafficGenerator):
    """The demo's traffic generator, also noting when each failure happened and what it was."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures: list[tuple[float, str, str]] = []  # (monotonic time, version, what)

    async def _one_request(self, client: httpx.AsyncClient) -> None:
        try:
            response = await client.get(self.url, headers=self.headers)
        except Exception as error:  # no answer: refused, reset, timed out
            self.failures.append((time.monotonic(), NO_VERSION, type(error).__name__))
            self._count(NO_VERSION, transport_error=True)
            return
        version = response.headers.get(VERSION_HEADER, "unknown")
        if response.status_code >= 500:
            self.failures.append((time.monotonic(), version, str(response.status_code)))
        self._count(version, error=response.status_code >= 500)


def steady_traffic(frontend_url: str) -> BackgroundTraffic:
    """BackgroundTraffic at RATE whose generator keeps the time of each failure."""
    traffic = BackgroundTraffic(frontend_url, rate=RATE)
    traffic.generator = TimedTraffic(frontend_url, rate_per_s=RATE, concurrency=32)
    return traffic


def failure_times(traffic: BackgroundTraffic | None, origin: float) -> list[str]:
    """Failures outside a broken canary, as '+1.23s none/RemoteProtocolError' relative to `origin`."""
    generator = traffic.generator if traffic is not None else None
    if not isinstance(generator, TimedTraffic):
        return []
    return [
        f"{at - origin:+.2f}s {version}/{what}"
        for at, version, what in list(generator.failures)
        if not version.startswith("broken")
    ]


class Admin:
    """HAProxy's admin socket through fridaymorning's own HAProxyRouter, from synchronous code."""

    def __init__(self, socket_path: Path) -> None:
        self.router = HAProxyRouter(socket_path, timeout_s=2.0)
        self.loop = asyncio.new_event_loop()

    def states(self, backend: str = SERVICE) -> dict[str, Any]:
        return {s.server: s for s in self.loop.run_until_complete(self.router.server_states(backend))}

    def weights(self, backend: str = SERVICE) -> dict[str, int]:
        return self.loop.run_until_complete(self.router.get_weights(backend))

    def worker_pid(self) -> int:
        return int(self.loop.run_until_complete(self.router.show_info())["Pid"])

    def close(self) -> None:
        self.loop.close()


class Deployment:
    """One `fm up` on a fresh state directory, the traffic through its frontend, and the API."""

    def __init__(self, root: Path, name: str, document: dict[str, Any]) -> None:
        self.directory = root / name
        self.directory.mkdir(parents=True)
        self.config = self.directory / "fridaymorning.yaml"
        self.config.write_text(yaml.safe_dump(document))
        self.state_dir = Path(document["state_dir"])
        self.up: FmUpProcess | None = None
        self.traffic: BackgroundTraffic | None = None
        self.db: sqlite3.Connection | None = None
        self.weights_at_kill: dict[str, int] | None = None

    def start(self) -> None:
        self.up = FmUpProcess(self.config, timeout_s=START_TIMEOUT_S)
        self.traffic = steady_traffic(self.up.frontend)
        self.traffic.start()
        time.sleep(1.0)  # steady traffic before anything happens

    @property
    def api(self) -> str:
        assert self.up is not None
        return self.up.api

    def get(self, path: str) -> Any:
        response = httpx.get(self.api + path, timeout=5)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        token = (self.state_dir / TOKEN_FILE).read_text().strip()
        return httpx.post(self.api + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=5)

    def deploy(self, version: str) -> int:
        response = self.post(f"/services/{SERVICE}/deploy", {"version": version})
        response.raise_for_status()
        return int(response.json()["id"])

    def act(self, rollout_id: int, action: str) -> httpx.Response:
        response = self.post(f"/rollouts/{rollout_id}/{action}")
        if response.status_code != 202:
            raise RuntimeError(f"{action} refused: {response.status_code} {response.text}")
        return response

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        return self.get(f"/rollouts/{rollout_id}")  # type: ignore[no-any-return]

    def wait_phase(self, rollout_id: int, phases: set[str], timeout_s: float) -> dict[str, Any] | None:
        found: dict[str, Any] | None = wait_for(
            lambda: (r := self.rollout(rollout_id))["phase"] in phases and r, timeout_s, 0.1
        )
        return found

    def persisted_phase(self, rollout_id: int) -> str | None:
        """The phase in the state DB right now (read-only, without going through fm up)."""
        if self.db is None:
            self.db = sqlite3.connect(f"file:{self.state_dir / 'state.db'}?mode=ro", uri=True, timeout=1.0)
        try:
            row = self.db.execute("SELECT phase FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
        except sqlite3.Error:
            return None
        return str(row[0]) if row else None

    def admin(self) -> Admin:
        return Admin(self.state_dir / "haproxy.sock")

    def weights(self) -> dict[str, int]:
        admin = self.admin()
        try:
            return admin.weights()
        finally:
            admin.close()

    def tally(self) -> dict[str, dict[str, int]]:
        assert self.traffic is not None
        return self.traffic.generator.snapshot()

    def close(self, origin: float) -> tuple[dict[str, dict[str, int]], list[str]]:
        """Stop the traffic, then `fm up` (SIGTERM: an orderly stop); the final tally and failures' times."""
        tally = self.traffic.stop() if self.traffic is not None else {}
        failures = failure_times(self.traffic, origin)
        self.traffic = None
        if self.db is not None:
            self.db.close()
            self.db = None
        if self.up is not None and self.up.process.poll() is None:
            try:
                self.up.stop()
            except Exception:
                self.up.kill()
        return tally, failures


# --------------------------------------------------------------------------------------------------
# kill -9 of fm up
# --------------------------------------------------------------------------------------------------


def kill_when_persisted(d: Deployment, rollout_id: int, wanted: str, timeout_s: float = 10.0) -> str | None:
    """Poll the state DB every ~2 ms; kill -9 fm up the moment it shows `wanted` (or a terminal phase)."""
    assert d.up is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        phase = d.persisted_phase(rollout_id)
        if phase == wanted or phase in TERMINAL:
            d.up.kill()
            return phase
        time.sleep(0.002)
    d.up.kill()
    return None


def drive_to(d: Deployment, phase: str) -> tuple[int, str]:
    """Deploy and bring the rollout to `phase`, then kill -9 fm up. (rollout id, the version deployed)."""
    assert d.up is not None
    version = "broken1" if phase == "rolling_back" else "v2"
    rollout_id = d.deploy(version)
    if phase == "starting":
        time.sleep(2.5)  # the canary started; the pre_rollout hook sleeps
        if d.persisted_phase(rollout_id) != "starting":
            raise RuntimeError(f"not starting 2.5 s after deploy: {d.persisted_phase(rollout_id)}")
        d.up.kill()
        return rollout_id, version
    if phase == "rolling_back":
        kill_when_persisted(d, rollout_id, "rolling_back", timeout_s=30)
        return rollout_id, version
    first = {"awaiting_approval": "awaiting_approval", "held": "held"}.get(phase, "progressing")
    if d.wait_phase(rollout_id, {first}, 30) is None:
        raise RuntimeError(f"rollout never reached {first}: {d.rollout(rollout_id)['phase']}")
    if phase in ("progressing", "promoting", "aborting", "paused"):
        time.sleep(1.5)  # the canary serves its share
    if phase == "paused":
        d.act(rollout_id, "pause")
        if d.wait_phase(rollout_id, {"paused"}, 10) is None:
            raise RuntimeError("pause was not applied")
    if phase == "promoting":
        d.act(rollout_id, "promote?full=true")
        kill_when_persisted(d, rollout_id, "promoting")
        return rollout_id, version
    if phase == "aborting":
        d.act(rollout_id, "abort")
        kill_when_persisted(d, rollout_id, "aborting")
        return rollout_id, version
    d.weights_at_kill = d.weights()
    d.up.kill()
    return rollout_id, version


KILL_PHASES = (
    "starting",
    "progressing",
    "awaiting_approval",
    "paused",
    "held",
    "promoting",
    "aborting",
    "rolling_back",
)
# After the restart, what a person does (in order), and the end the rollout must reach.
FINISH: dict[str, tuple[list[tuple[str, str]], str]] = {
    "starting": ([("wait", "progressing"), ("act", "promote?full=true")], "promoted"),
    "progressing": ([("act", "promote?full=true")], "promoted"),
    "awaiting_approval": ([("act", "approve")], "promoted"),
    "paused": ([("act", "resume"), ("wait", "progressing"), ("act", "promote?full=true")], "promoted"),
    "held": ([("act", "abort")], "aborted"),
    "promoting": ([], "promoted"),
    "aborting": ([], "aborted"),
    "rolling_back": ([], "rolled_back"),
}


# A kill9 phase with this suffix also kills the collector process (as a crash of the whole host's
# fridaymorning processes would): its lines are lost until `fm up` starts another, which counts them.
WITH_COLLECTOR = "+collector"


def kill_collector(d: Deployment) -> int | None:
    """kill -9 of the collector process (its pid from the state directory); the pid, or None."""
    pid = read_pid(d.state_dir / "collector.pid")
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    return pid


def kill_config(directory: Path, phase: str) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [dict(LONG_STEP)]
    hooks: list[dict[str, Any]] = []
    if phase == "starting":
        command = [sys.executable, "-c", HOOK_SCRIPT]
        hooks = [{"name": "slow-smoke", "kind": "pre_rollout", "command": command, "timeout_s": 30}]
    elif phase == "awaiting_approval":
        steps = [
            {"weight": 30, "min_duration_s": 2, "max_duration_s": 60, "min_requests": 30, "approval": True}
        ]
    elif phase == "held":
        steps = [{"weight": 30, "min_duration_s": 1, "max_duration_s": 3, "min_requests": 1_000_000}]
    return settings(directory, steps, hooks)


def restart_event(rollout: dict[str, Any]) -> dict[str, Any] | None:
    return next(
        (
            e
            for e in rollout["events"]
            if e["kind"] == "resumed" and e["reason"].startswith("controller restarted")
        ),
        None,
    )


def kill9_trial(root: Path, run_id: str, phase: str) -> dict[str, Any]:
    name = f"kill9-{phase}"
    set_mark(run_id, name)
    d = Deployment(root, name, kill_config(root / name, phase.removesuffix(WITH_COLLECTOR)))
    result: dict[str, Any] = {"kind": "kill9", "phase": phase, "resumed": False}
    started = origin = time.monotonic()
    timeline: dict[str, float] = {}

    def mark(what: str) -> None:
        timeline[what] = round(time.monotonic() - origin, 2)

    try:
        d.start()
        assert d.up is not None
        rollout_id, result["version"] = drive_to(d, phase.removesuffix(WITH_COLLECTOR))
        if phase.endswith(WITH_COLLECTOR):
            result["collector_killed"] = kill_collector(d)
        origin = time.monotonic()
        persisted = d.persisted_phase(rollout_id)  # fm up is dead: this is what it left
        result["persisted_at_kill"] = persisted
        # HAProxy, the instances (and a hook still running): orphans now, and they must keep serving.
        data_plane = marked_processes(f"{run_id}/{name}")
        if phase == "starting":
            result["hooks_running_at_kill"] = len(hook_processes(f"{run_id}/{name}"))
        before_outage = d.tally()
        time.sleep(OUTAGE_S)
        outage = tally_diff(d.tally(), before_outage)
        result["outage_requests"] = sum(c["requests"] for c in outage.values())
        result["outage_failed"] = failed_requests(outage)["total"]
        result["data_plane_alive"] = f"{sum(process_alive(p) for p in data_plane)}/{len(data_plane)}"
        mark("restart")
        d.up = FmUpProcess(d.config, timeout_s=START_TIMEOUT_S)
        mark("api_up")
        if persisted in TERMINAL:
            result["missed"] = True  # the transient phase was over before the kill landed
            result["final"] = d.rollout(rollout_id)["phase"]
            return result
        resumed = wait_for(lambda: restart_event(d.rollout(rollout_id)), 15)
        result["resumed_event"] = resumed is not None
        if resumed is not None:
            result["resumed_in"] = resumed["phase"]
        if d.weights_at_kill is not None:
            time.sleep(1.5)  # a tick or so after the resume
            result["weights_at_kill"] = d.weights_at_kill
            result["weights_after_restart"] = d.weights()
            result["weights_kept"] = result["weights_after_restart"] == d.weights_at_kill
        actions, expected = FINISH[phase.removesuffix(WITH_COLLECTOR)]
        for kind, what in actions:
            if kind == "wait":
                most_hooks = 0

                def reached(what: str = what) -> bool:
                    nonlocal most_hooks
                    most_hooks = max(most_hooks, len(hook_processes(f"{run_id}/{name}")))
                    return bool(d.rollout(rollout_id)["phase"] == what)

                if not wait_for(reached, 30):
                    raise RuntimeError(f"after the restart, never {what}: {d.rollout(rollout_id)['phase']}")
                if phase == "starting":
                    result["hooks_at_once_after_restart"] = most_hooks
                mark(what)
            else:
                result.setdefault("phase_after_restart", d.rollout(rollout_id)["phase"])
                d.act(rollout_id, what)
                mark(what.partition("?")[0])
        final = d.wait_phase(rollout_id, TERMINAL, 45)
        mark("end")
        result["final"] = final["phase"] if final else d.rollout(rollout_id)["phase"]
        result["expected"] = expected
        result["resumed"] = bool(resumed) and result["final"] == expected
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        if d.traffic is not None and d.up is not None and d.up.process.poll() is None:
            result.update(log_loss(d))
        tally, failures = d.close(origin)
        result["timeline"] = timeline
        result["failures"] = failures
        result["requests"] = sum(c["requests"] for c in tally.values())
        result["failed"] = failed_requests(tally)
        result["failed_stable_requests"] = result["failed"]["total"]
        result["leftovers"] = reap_marked(f"{run_id}/{name}")
        result["seconds"] = round(time.monotonic() - started, 1)
    return result


def backend_requests(d: Deployment) -> int:
    """Requests HAProxy counted for the service's backend (its BACKEND row's `stot`)."""
    admin = d.admin()
    try:
        rows = admin.loop.run_until_complete(admin.router.show_stat())
    finally:
        admin.close()
    return next(int(r["stot"]) for r in rows if r["pxname"] == SERVICE and r["svname"] == "BACKEND")


def stored_requests(d: Deployment) -> int:
    """Requests in every window of the metric store (read-only, beside fm up)."""
    with sqlite3.connect(f"file:{d.state_dir / 'metrics.db'}?mode=ro", uri=True, timeout=5) as db:
        return int(db.execute("SELECT COALESCE(SUM(requests), 0) FROM windows").fetchone()[0])


def log_loss(d: Deployment) -> dict[str, Any]:
    """Once the traffic stopped: requests HAProxy counted, those stored, and the loss fm reported.

    log_lines_lost = HAProxy's count - the requests stored; reported = the collector's
    `lost_across_restart` + the reconciliation's `missing_lines` (what `fm status` shows);
    The collector claims only the loss it is sure of (`lost_across_restart`) and says how much it
    could be at most (`lost_across_restart_max`: requests counted while a snapshot was being read may
    or may not belong to the interval). log_lines_lost_unreported = what was lost beyond the most
    reported (the target is 0); log_lines_lost_beyond_certain = beyond the certain part.
    """
    assert d.traffic is not None
    d.traffic.stop()
    try:
        counted = backend_requests(d)
        wait_for(lambda: stored_requests(d) >= counted, 15, 0.2)  # the last windows flush
        stored = stored_requests(d)
        time.sleep(6)  # one more reconciliation (every 5 s) sees the last seconds
        collector = d.get("/status")["collector"]
    except Exception as error:
        return {"log_error": f"{type(error).__name__}: {error}"}
    reconciliation = collector.get("reconciliation") or {}
    missing = reconciliation.get("missing_lines") or 0
    reported = (collector.get("lost_across_restart") or 0) + missing
    across_max = reconciliation.get("lost_across_restart_max")
    reported_max = reported if across_max is None else across_max + missing
    lost = counted - stored
    return {
        "log_lines_counted": counted,
        "log_lines_stored": stored,
        "log_lines_lost": lost,
        "log_lines_reported_lost": reported,
        "log_lines_reported_lost_max": reported_max,
        "log_lines_lost_unreported": max(0, lost - reported_max),
        "log_lines_lost_beyond_certain": max(0, lost - reported),
        "collector_pid_kept": collector.get("process_restarts") == 0,
    }


# --------------------------------------------------------------------------------------------------
# kill -9 of the canary instance
# --------------------------------------------------------------------------------------------------


def canary_pid(d: Deployment) -> tuple[str, int, int | None, int | None]:
    """(server, port, pid listening on the port, pid recorded in local-instances.json)."""
    service = d.get("/status")["services"][0]
    server, _, address = service["canary_instances"][0].partition("@")
    port = int(address.rsplit(":", 1)[1])
    recorded = None
    with contextlib.suppress(OSError, ValueError, KeyError):
        records = json.loads((d.state_dir / "instances" / SERVICE / "local-instances.json").read_text())
        recorded = next((r["pid"] for r in records["instances"] if r["port"] == port), None)
    return server, port, listening_pid(port), recorded


def canary_crash_trial(root: Path, run_id: str, index: int) -> dict[str, Any]:
    name = f"canary-crash-{index}"
    set_mark(run_id, name)
    d = Deployment(root, name, settings(root / name, [dict(LONG_STEP)]))
    result: dict[str, Any] = {"kind": "canary_crash", "phase": "step 1", "rolled_back": False}
    started = killed = time.monotonic()
    admin = None
    try:
        d.start()
        rollout_id = d.deploy("v2")
        if d.wait_phase(rollout_id, {"progressing"}, 30) is None:
            raise RuntimeError("never progressing")
        time.sleep(2.0)
        server, _port, pid, recorded = canary_pid(d)
        result.update(server=server, pid=pid, pid_recorded=recorded)
        if pid is None or (recorded is not None and recorded != pid):
            raise RuntimeError(f"canary pid unclear: listening {pid}, recorded {recorded}")
        admin = d.admin()
        stot_at_kill = admin.states()[server].total_requests
        before = d.tally()
        os.kill(pid, signal.SIGKILL)
        killed, killed_wall = time.monotonic(), time.time()
        down_at = stot_down = None
        last_stot = stot_at_kill
        statuses: list[str] = []
        while time.monotonic() - killed < 20:
            states = admin.states()
            now = time.monotonic()
            state = states.get(server)
            if state is None:
                statuses.append("removed")
                break
            status = str(state.status.value)
            if not statuses or statuses[-1] != status:
                statuses.append(status)
            last_stot = state.total_requests
            if down_at is None and status == "DOWN":
                down_at, stot_down = now, state.total_requests
            time.sleep(0.02)
        result["statuses"] = " > ".join(statuses)
        result["seconds_to_down"] = round(down_at - killed, 2) if down_at is not None else None
        result["after_down"] = last_stot - stot_down if stot_down is not None else None
        result["stot_kill_to_down"] = stot_down - stot_at_kill if stot_down is not None else None
        final = d.wait_phase(rollout_id, TERMINAL, 30)
        result["final"] = final["phase"] if final else d.rollout(rollout_id)["phase"]
        result["rolled_back"] = result["final"] == "rolled_back"
        if final is not None:
            result["reason"] = final["reason"][:70]
            result["seconds_to_rolled_back"] = round(final["finished_at"] - killed_wall, 2)
        time.sleep(1.0)
        crash = failed_requests(tally_diff(d.tally(), before))
        result["failed_after_crash"] = crash["total"]
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        if admin is not None:
            admin.close()
        close_trial(d, result, killed, f"{run_id}/{name}", started)
    return result


def close_trial(d: Any, result: dict[str, Any], since: float, prefix: str, started: float) -> None:
    """Stop a trial's traffic and processes, and add its request counts, failures and leftovers."""
    tally, result["failures"] = d.close(since)
    result["requests"] = sum(c["requests"] for c in tally.values())
    result["failed"] = failed_requests(tally)
    result["leftovers"] = reap_marked(prefix)
    result["seconds"] = round(time.monotonic() - started, 1)


# --------------------------------------------------------------------------------------------------
# HAProxy reload mid-rollout
# --------------------------------------------------------------------------------------------------


def haproxy_master(state_dir: Path) -> int:
    text = (state_dir / "haproxy.cfg").read_text()
    match = PIDFILE_LINE.search(text)
    if match is None:
        raise RuntimeError("haproxy.cfg names no pidfile")
    pid = read_pid(Path(match.group(1)))
    if pid is None or not runs_haproxy_master(pid, state_dir / "haproxy.cfg"):
        raise RuntimeError(f"the pidfile {match.group(1)} names no HAProxy master of ours ({pid})")
    return pid


def reload_trial(root: Path, run_id: str, index: int) -> dict[str, Any]:
    name = f"reload-{index}"
    set_mark(run_id, name)
    steps = [
        {"weight": 30, "min_duration_s": 8, "max_duration_s": 60, "min_requests": 50},
        {"weight": 60, "min_duration_s": 3, "max_duration_s": 60, "min_requests": 50},
    ]
    d = Deployment(root, name, settings(root / name, steps))
    result: dict[str, Any] = {"kind": "haproxy_reload", "phase": "step 1", "weights_kept": False}
    started = sent = time.monotonic()
    admin = None
    try:
        d.start()
        rollout_id = d.deploy("v2")
        if d.wait_phase(rollout_id, {"progressing"}, 30) is None:
            raise RuntimeError("never progressing")
        time.sleep(2.0)
        admin = d.admin()
        step_before = d.rollout(rollout_id)["step"]
        weights_before = admin.weights()
        master = haproxy_master(d.state_dir)
        old_worker = admin.worker_pid()
        before = d.tally()
        os.kill(master, signal.SIGUSR2)
        sent = time.monotonic()
        new_worker = wait_for(lambda: (w := admin.worker_pid()) != old_worker and w, 10, 0.02)
        result["reload_s"] = round(time.monotonic() - sent, 2) if new_worker else None
        if not new_worker:
            raise RuntimeError("no new HAProxy worker answered within 10 s")
        weights_after = admin.weights()
        statuses_after = {s: st.status.value for s, st in admin.states().items()}
        step_after = d.rollout(rollout_id)["step"]
        result["weights_before"] = weights_before
        result["weights_after"] = weights_after
        result["statuses_after"] = statuses_after
        result["weights_kept"] = weights_after == weights_before and step_after == step_before
        time.sleep(3.0)
        statuses_later = {s: st.status.value for s, st in admin.states().items()}
        result["statuses_3s_later"] = statuses_later
        window = failed_requests(tally_diff(d.tally(), before))
        result["failed_during_reload"] = window["total"]
        final = d.wait_phase(rollout_id, TERMINAL, 40)
        result["final"] = final["phase"] if final else d.rollout(rollout_id)["phase"]
        if final is not None and final["phase"] != "promoted":
            result["reason"] = final["reason"][:70]
        result["continued"] = result["final"] == "promoted"
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        if admin is not None:
            admin.close()
        close_trial(d, result, sent, f"{run_id}/{name}", started)
    return result


# --------------------------------------------------------------------------------------------------
# A fleet: one of three HAProxy instances killed mid-rollout
# --------------------------------------------------------------------------------------------------


FLEET_PORT = 8080  # each instance's frontend, on its own namespace's address
FLEET_ADMIN_PORT = 9999  # instance 1's admin socket over TCP, inside its own namespace
FLEET_STEPS = [
    {"weight": 20, "min_duration_s": 3, "max_duration_s": 300, "min_requests": 50},
    {"weight": 50, "min_duration_s": 3, "max_duration_s": 300, "min_requests": 50},
]


def fleet_settings(directory: Path, namespaces: list[Any], admins: list[str]) -> dict[str, Any]:
    """The fm config over three brought instances (lb1 over ipv4@, the others over Unix sockets)."""
    host = namespaces[0].host_address
    return {
        "state_dir": str(directory / "state"),
        "haproxy": {
            "instances": [
                {"name": f"lb{i}", "admin": admin if admin.startswith("ipv4@") else f"unix://{admin}"}
                for i, admin in enumerate(admins, start=1)
            ],
            "include_file": str(directory / "fridaymorning.cfg"),
        },
        "collector": {"listen": f"{host}:{free_port(socket.SOCK_DGRAM)}", "lateness_s": 0.5},
        "api": {"listen": f"127.0.0.1:{free_port()}"},
        "services": [
            {
                "name": SERVICE,
                "frontend": f"{namespaces[0].address}:{FLEET_PORT}",
                "stable": "v1",
                "platform": {"command": app_command(host), "host": host, "stop_grace_s": 2},
                "rollout": {"steps": FLEET_STEPS},
                "analysis": {"min_requests": 50, "quantiles": [0.5], "latency_tolerance": 1.5},
            }
        ],
    }


async def fleet_run(directory: Path, result: dict[str, Any]) -> None:
    """Three instances in their own namespaces; lb2 is killed at step 1 and restarted once the
    rollout holds for it; the rollout must then promote with the same weights everywhere."""
    namespaces = create_namespaces(3)
    haproxies: list[TeamHAProxy] = []
    runtime: Runtime | None = None
    try:
        admins = [f"ipv4@{namespaces[0].address}:{FLEET_ADMIN_PORT}"] + [
            str(directory / f"lb{i}.sock") for i in (2, 3)
        ]
        document = fleet_settings(directory, namespaces, admins)
        config = Config.model_validate(document)
        config.base_dir = str(directory)
        ours = write_include_file(config)
        for index, (namespace, admin) in enumerate(zip(namespaces, admins, strict=True), start=1):
            theirs = directory / f"lb{index}.cfg"
            theirs.write_text(
                instance_config(
                    admin=admin,
                    collector=document["collector"]["listen"],
                    name=f"lb{index}",
                    address=namespace.address,
                    port=FLEET_PORT,
                )
            )
            haproxies.append(
                TeamHAProxy([theirs, ours], admin, directory / f"lb{index}.out", netns=namespace.name)
            )
            await haproxies[-1].start()
        runtime = Runtime(config, announce=lambda _: None)
        await runtime.start()
        urls = {
            f"lb{index}": f"http://{ns.address}:{FLEET_PORT}/" for index, ns in enumerate(namespaces, start=1)
        }
        async with httpx.AsyncClient(timeout=5) as client, requests_while(client, urls) as tallies:
            await fleet_rollout(runtime, haproxies, result)
        result["requests"] = sum(count for tally in tallies.values() for count in tally.values())
        # lb2's clients see failures while it is dead, as they must; the others' must see none.
        result["failed"] = {"total": sum(failed_answers(tallies[name]) for name in ("lb1", "lb3"))}
        result["killed_instance_failed"] = failed_answers(tallies["lb2"])
        weights = [await HAProxyRouter(admin, timeout_s=5.0).get_weights(SERVICE) for admin in admins]
        result["weights"] = weights
        result["recovered"] = result.get("final") == "promoted" and all(w == weights[0] for w in weights)
    finally:
        if runtime is not None:
            await runtime.stop()
        for haproxy in haproxies:
            haproxy.stop()
        remove_namespaces(namespaces)


def failed_answers(tally: dict[str, int]) -> int:
    """Requests answered with anything but 200, or not answered at all."""
    return sum(count for status, count in tally.items() if status != "200")


async def fleet_rollout(runtime: Runtime, haproxies: list[TeamHAProxy], result: dict[str, Any]) -> None:
    """Deploy v2; kill lb2 in step 1; once the rollout holds for it, restart it; wait for the end."""
    controller = runtime.controllers[SERVICE]
    rollout_id = controller.deploy("v2").id

    def current() -> Any:
        return runtime.states.rollout(rollout_id) if runtime is not None else None

    await async_wait(lambda: current().canary_weight == FLEET_STEPS[0]["weight"], 120)
    haproxies[1].kill()
    killed = time.monotonic()

    def lb2_shown_lagging() -> bool:
        return any(i["name"] == "lb2" and i["state"] == "lagging" for i in runtime.status()["haproxy"])

    await async_wait(lb2_shown_lagging, 120)
    result["shown_lagging_after_s"] = round(time.monotonic() - killed, 2)
    await async_wait(lambda: "lb2" in current().reason and current().phase.value == "progressing", 120)
    result["held_after_s"] = round(time.monotonic() - killed, 2)
    result["held_reason"] = current().reason
    await haproxies[1].start()
    restarted = time.monotonic()
    final = await asyncio.wait_for(controller.wait(), 300)
    result["final"] = final.phase.value
    result["promoted_after_restart_s"] = round(time.monotonic() - restarted, 2)


async def async_wait(check: Callable[[], Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s} s")
        await asyncio.sleep(0.1)


def fleet_trial(root: Path, run_id: str, index: int) -> dict[str, Any]:
    name = f"fleet-{index}"
    set_mark(run_id, name)
    directory = root / name
    directory.mkdir(parents=True)
    result: dict[str, Any] = {"kind": "fleet", "phase": "lb2 killed in step 1", "recovered": False}
    started = time.monotonic()
    try:
        if os.geteuid() != 0:
            raise RuntimeError("the fleet trial creates network namespaces: run it as root")
        asyncio.run(fleet_run(directory, result))
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


# --------------------------------------------------------------------------------------------------
# The collector stopped: no data
# --------------------------------------------------------------------------------------------------


NO_DATA_STEPS = [
    {"weight": 20, "min_duration_s": 3, "max_duration_s": 10, "min_requests": 50},
    {"weight": 50, "min_duration_s": 3, "max_duration_s": 10, "min_requests": 50},
]


async def no_data_run(directory: Path, stop_in_step: int) -> dict[str, Any]:
    config = Config.model_validate(settings(directory, NO_DATA_STEPS))
    runtime = Runtime(config, announce=lambda _: None)
    result: dict[str, Any] = {"kind": "no_data", "phase": f"step {stop_in_step}", "promoted": False}
    traffic: BackgroundTraffic | None = None
    stopped = time.monotonic()
    try:
        await runtime.start()
        traffic = steady_traffic(f"http://{config.services[0].frontend}/")
        traffic.start()
        await asyncio.sleep(1.0)
        controller = runtime.controllers[SERVICE]
        rollout_id = controller.deploy("v2").id
        deadline = time.monotonic() + 40
        while True:
            state = runtime.states.rollout(rollout_id)
            assert state is not None
            if state.phase.value == "progressing" and state.step_index == stop_in_step - 1:
                break
            if not state.active or time.monotonic() > deadline:
                raise RuntimeError(f"step {stop_in_step} never reached: {state.phase} {state.reason}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0 if stop_in_step == 1 else 0.3)
        assert runtime.collector is not None
        await runtime.collector.stop()
        stopped = time.monotonic()
        window = sum(step["max_duration_s"] for step in NO_DATA_STEPS) + 3.0
        phases = [state.phase.value]
        held_at = None
        while time.monotonic() - stopped < window:
            state = runtime.states.rollout(rollout_id)
            assert state is not None
            if phases[-1] != state.phase.value:
                phases.append(state.phase.value)
            if state.phase.value == "held" and held_at is None:
                held_at = time.monotonic()
            if not state.active or (held_at is not None and time.monotonic() - held_at > 2.0):
                break
            await asyncio.sleep(0.1)
        result["phases"] = " > ".join(phases)
        result["final"] = state.phase.value
        result["step_at_end"] = state.step_index + 1
        result["held_after_s"] = round(held_at - stopped, 1) if held_at is not None else None
        result["promoted"] = "promoted" in phases
        result["reason"] = state.reason[:70]
        if state.active:
            controller.command(rollout_id, "abort")
            final = await asyncio.wait_for(controller.wait(), 30)
            result["cleanup"] = final.phase.value if final else None
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        if traffic is not None:
            tally = traffic.stop()
            result["failures"] = failure_times(traffic, stopped)
            result["requests"] = sum(c["requests"] for c in tally.values())
            result["failed"] = failed_requests(tally)
        await runtime.stop()
    return result


def no_data_trial(root: Path, run_id: str, stop_in_step: int) -> dict[str, Any]:
    name = f"no-data-step{stop_in_step}"
    set_mark(run_id, name)
    started = time.monotonic()
    directory = root / name
    directory.mkdir(parents=True)
    result = asyncio.run(no_data_run(directory, stop_in_step))
    result["leftovers"] = reap_marked(f"{run_id}/{name}")
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def measured(trial: dict[str, Any]) -> str:
    """What a trial measured, in one line."""
    kind = trial["kind"]
    parts: list[str] = []
    if kind == "kill9":
        parts.append(f"persisted {trial.get('persisted_at_kill')}")
        if trial.get("resumed_in"):
            parts.append(f"resumed in {trial['resumed_in']}")
        if "restart_s" in trial:
            parts.append(f"restart {trial['restart_s']} s")
        parts.append(f"outage {trial.get('outage_requests', 0)} req/{trial.get('outage_failed', 0)} failed")
        parts.append(f"data plane {trial.get('data_plane_alive')}")
        if "weights_kept" in trial:
            kept = "kept" if trial["weights_kept"] else "CHANGED"
            parts.append(f"weights {kept} {trial['weights_after_restart']}")
        if "hooks_running_at_kill" in trial:
            parts.append(
                f"hooks running at kill {trial['hooks_running_at_kill']}, "
                f"at once after restart {trial.get('hooks_at_once_after_restart')}"
            )
        if "log_lines_lost" in trial:
            parts.append(
                f"log lines lost {trial['log_lines_lost']} of {trial['log_lines_counted']}, reported "
                f"{trial['log_lines_reported_lost']}..{trial['log_lines_reported_lost_max']} "
                f"(unreported {trial['log_lines_lost_unreported']})"
            )
        if trial.get("missed"):
            parts.append("MISSED (already terminal)")
    elif kind == "canary_crash":
        parts.append(f"DOWN after {trial.get('seconds_to_down')} s")
        parts.append(
            f"stot kill..DOWN +{trial.get('stot_kill_to_down')}, after DOWN +{trial.get('after_down')}"
        )
        parts.append(f"statuses {trial.get('statuses')}")
        parts.append(f"rolled back after {trial.get('seconds_to_rolled_back')} s")
    elif kind == "haproxy_reload":
        parts.append(f"new worker after {trial.get('reload_s')} s")
        parts.append(f"weights {trial.get('weights_before')} -> {trial.get('weights_after')}")
        parts.append(f"failed around reload {trial.get('failed_during_reload')}")
    elif kind == "fleet":
        parts.append(f"lb2 shown lagging after {trial.get('shown_lagging_after_s')} s")
        parts.append(f"held for lb2 after {trial.get('held_after_s')} s ('{trial.get('held_reason')}')")
        parts.append(f"promoted {trial.get('promoted_after_restart_s')} s after lb2's restart")
        parts.append(f"weights {trial.get('weights')}")
        parts.append(f"failed on lb2 while dead {trial.get('killed_instance_failed')}")
    elif kind == "no_data":
        parts.append(trial.get("phases", ""))
        parts.append(f"held {trial.get('held_after_s')} s after the stop")
    if trial.get("reason") and kind != "kill9":
        parts.append(f"'{trial['reason']}'")
    if kind == "kill9" and trial.get("timeline"):
        parts.append("t " + " ".join(f"{k}={v}" for k, v in trial["timeline"].items()))
    if trial.get("failures"):
        shown = trial["failures"][:6]
        more = len(trial["failures"]) - len(shown)
        parts.append(f"FAILURES {shown}" + (f" +{more} more" if more else ""))
    if trial.get("error"):
        parts.append(f"ERROR {trial['error'][:160]}")
    if trial.get("leftovers"):
        parts.append(f"LEFTOVERS {trial['leftovers']}")
    return "; ".join(parts)


def outcome(trial: dict[str, Any]) -> str:
    key = {
        "kill9": "resumed",
        "canary_crash": "rolled_back",
        "haproxy_reload": "weights_kept",
        "fleet": "recovered",
    }.get(trial["kind"])
    if key is not None:
        return f"{trial.get('final', '?')} {'OK' if trial.get(key) else 'NOT OK'}"
    return f"{trial.get('final', '?')} {'NOT OK' if trial.get('promoted') or trial.get('error') else 'OK'}"


def is_restart_failure(trial: dict[str, Any], failure: str) -> bool:
    """True when a failure of a kill9 trial happened while the new `fm up` started (it reloads HAProxy)."""
    timeline = trial.get("timeline", {})
    at = float(failure.split("s ", 1)[0])
    return "restart" in timeline and "api_up" in timeline and timeline["restart"] <= at <= timeline["api_up"]


def print_table(trials: list[dict[str, Any]]) -> None:
    header = f"{'kind':<15} {'phase':<18} {'outcome':<17} {'req':>6} {'failed':>6} {'s':>5}  measured"
    say(header)
    say("-" * len(header))
    for trial in trials:
        failed = trial.get("failed", {}).get("total", "?")
        say(
            f"{trial['kind']:<15} {trial['phase']:<18} {outcome(trial):<17} {trial.get('requests', 0):>6} "
            f"{failed:>6} {trial.get('seconds', 0):>5.0f}  {measured(trial)}"
        )


def summarize(trials: list[dict[str, Any]], seconds: float, leftovers: list[str]) -> dict[str, Any]:
    def of(kind: str) -> list[dict[str, Any]]:
        return [t for t in trials if t["kind"] == kind]

    kills = [t for t in of("kill9") if not t.get("missed")]
    crashes, reloads, no_data, fleets = of("canary_crash"), of("haproxy_reload"), of("no_data"), of("fleet")
    downs = [t.get("seconds_to_down") for t in crashes]
    return {
        "kill9": {
            "trials": len(kills),
            "resumed": sum(bool(t.get("resumed")) for t in kills),
            "failed_stable_requests": sum(t.get("failed_stable_requests", 0) for t in kills),
            "missed_transient": len(of("kill9")) - len(kills),
            "weights_kept": sum(bool(t.get("weights_kept")) for t in kills if "weights_kept" in t),
            "weights_checked": sum(1 for t in kills if "weights_kept" in t),
            "log_lines_lost": sum(t.get("log_lines_lost", 0) for t in kills),
            "log_lines_lost_unreported": sum(t.get("log_lines_lost_unreported", 0) for t in kills),
            "log_lines_lost_beyond_certain": sum(t.get("log_lines_lost_beyond_certain", 0) for t in kills),
            "log_lines_counted": sum(t.get("log_lines_counted", 0) for t in kills),
            "log_errors": [t["log_error"] for t in kills if t.get("log_error")],
            "restart_failed_requests": sum(
                1 for t in kills for f in t.get("failures", []) if is_restart_failure(t, f)
            ),
            "phases": {
                t["phase"]: {
                    "persisted_at_kill": t.get("persisted_at_kill"),
                    "resumed_in": t.get("resumed_in"),
                    "final": t.get("final"),
                    "resumed": bool(t.get("resumed")),
                    "failed": t.get("failed", {}).get("total"),
                    "outage_failed": t.get("outage_failed"),
                    "log_lines_lost": t.get("log_lines_lost"),
                    "log_lines_lost_unreported": t.get("log_lines_lost_unreported"),
                    "log_lines_reported_lost": t.get("log_lines_reported_lost"),
                    "log_lines_reported_lost_max": t.get("log_lines_reported_lost_max"),
                    **({"error": t["error"]} if t.get("error") else {}),
                }
                for t in of("kill9")
            },
        },
        "canary_crash": {
            "trials": len(crashes),
            "rolled_back": sum(bool(t.get("rolled_back")) for t in crashes),
            "requests_to_dead_server_after_down": sum(t.get("after_down") or 0 for t in crashes),
            "seconds_to_down": downs,
            "down_within_2s": sum(1 for s in downs if s is not None and s <= 2.0),
            "seconds_to_rolled_back": [t.get("seconds_to_rolled_back") for t in crashes],
            "requests_to_dead_server_before_down": [t.get("stot_kill_to_down") for t in crashes],
            "failed_requests": sum(t.get("failed", {}).get("total", 0) for t in crashes),
        },
        "haproxy_reload": {
            "trials": len(reloads),
            "weights_kept": sum(bool(t.get("weights_kept")) for t in reloads),
            "continued_to_promotion": sum(bool(t.get("continued")) for t in reloads),
            "failed_during_reload": sum(t.get("failed_during_reload") or 0 for t in reloads),
            "reload_s": [t.get("reload_s") for t in reloads],
        },
        "no_data": {
            "trials": len(no_data),
            "promoted": sum(bool(t.get("promoted")) for t in no_data),
            "held": sum(1 for t in no_data if t.get("held_after_s") is not None),
        },
        "fleet": {
            "instances": 3,
            "killed_trials": len(fleets),
            "recovered": sum(bool(t.get("recovered")) for t in fleets),
            "failed_stable_requests": sum(t.get("failed", {}).get("total", 0) for t in fleets),
            "shown_lagging_after_s": [t.get("shown_lagging_after_s") for t in fleets],
            "held_after_s": [t.get("held_after_s") for t in fleets],
            "promoted_after_restart_s": [t.get("promoted_after_restart_s") for t in fleets],
            "killed_instance_failed_requests": [t.get("killed_instance_failed") for t in fleets],
        },
        "errors": [f"{t['kind']}/{t['phase']}: {t['error']}" for t in trials if t.get("error")],
        "leftover_processes": leftovers,
        "seconds": round(seconds, 1),
    }


def build_plan(root: Path, run_id: str, quick: bool, only: str | None) -> list[Callable[[], dict[str, Any]]]:
    """The trials to run, in order."""
    # --quick kills in two phases that last: a kill in a transient phase (promoting, aborting) races
    # with the controller, which the full run measures and reports.
    phases = ("progressing", "paused") if quick else KILL_PHASES
    phases += ("progressing" + WITH_COLLECTOR,)
    repeats = 1 if quick else 3
    plan: list[Callable[[], dict[str, Any]]] = [partial(kill9_trial, root, run_id, phase) for phase in phases]
    plan += [partial(canary_crash_trial, root, run_id, i) for i in range(1, repeats + 1)]
    plan += [partial(reload_trial, root, run_id, i) for i in range(1, repeats + 1)]
    plan += [partial(no_data_trial, root, run_id, step) for step in ((1,) if quick else (1, 2))]
    plan += [partial(fleet_trial, root, run_id, i) for i in range(1, repeats + 1)]
    if only:
        kind, _, argument = only.partition(":")
        if kind == "kill9":
            plan = [partial(kill9_trial, root, run_id, argument)]
        elif kind == "canary_crash":
            plan = [partial(canary_crash_trial, root, run_id, 1)]
        elif kind == "haproxy_reload":
            plan = [partial(reload_trial, root, run_id, 1)]
        elif kind == "fleet":
            plan = [partial(fleet_trial, root, run_id, 1)]
        else:
            plan = [partial(no_data_trial, root, run_id, int(argument or 1))]
    return plan


def main() -> None:
    global OUT
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="one trial per kind, kill -9 in 2 lasting phases"
    )
    parser.add_argument(
        "--json", action="store_true", help="the table to stderr; only the JSON line on stdout"
    )
    parser.add_argument(
        "--only",
        help="one trial, for debugging: kill9:PHASE, canary_crash, haproxy_reload, no_data:STEP, fleet",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, state)")
    options = parser.parse_args()
    if options.json:
        OUT = sys.stderr
    if not Path(HAPROXY).exists():
        sys.exit(f"haproxy not found ({HAPROXY}); install it with: sudo apt-get install -y haproxy")
    run_id = uuid.uuid4().hex[:10]
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="fm-faults-"))
    trials: list[dict[str, Any]] = []
    leftovers: list[str] = []
    try:
        plan = build_plan(root, run_id, options.quick, options.only)
        for run in plan:
            trial = run()
            trials.append(trial)
            say(
                f"[{time.monotonic() - started:5.0f} s] {trial['kind']} {trial['phase']}: "
                f"{outcome(trial)}; {measured(trial)}"
            )
    finally:
        leftovers = reap_marked(f"{run_id}/")
        if options.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    say()
    print_table(trials)
    result = summarize(trials, time.monotonic() - started, leftovers)
    say()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
