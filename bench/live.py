"""The judge on real servers: `python bench/live.py [--quick] [--json]`.

Two web servers this project did not write, each behind a real `fm up` (HAProxy, the collector, the
default `analysis` policy, the rollout plan `fm simulate` uses by default: 10%, 25%, 50%), under paced
wrk traffic at about 100 and about 1000 requests per second per service:

* nginx from Debian (`nginx-light`), serving a static page (bench/live/nginx_release.py);
* httpbin from PyPI under gunicorn (gthread workers), answering `GET /get` (bench/live/httpbin_release.py),
  in a venv of its own: `.venv-httpbin` beside the project's `.venv` (--httpbin-venv), made once with pip
  from bench/live/requirements-httpbin.txt, whose pins (greenlet<3 for httpbin on Python 3.11) the
  project's own environment cannot hold beside Playwright.

Every version is the same server started by the service's instance command (an argv; the version's
name picks the release's behaviour):

* identical (`identicalN`): the same binary and config as the stable `v1`; the target is 0 rolled back,
  all promoted by the judge alone within 5 minutes of the deploy;
* errors_5pct (`errors5pctN`): 5% of requests answer 500 (nginx: `split_clients` on `$request_id`;
  httpbin: a WSGI middleware); the target is all rolled back;
* plus_40ms (`plus40msN`): every request answered 40 ms later (nginx: the echo module's `echo_sleep`,
  which Debian's nginx-light loads; httpbin: a middleware that sleeps); the target is all rolled back.

One `fm up` per server and rate runs several services (each its own frontend, stable instance and wrk)
so that rollouts run side by side; each service deploys its share of the releases one after another
through fm's HTTP API. The servers run side by side, each its rates one after the other; how many
services one `fm up` runs at once is set per server and rate (SERVERS: what this 2-core machine
carries without saturating the stable version). A rollout still undecided
CAP_S after its deploy (held for a person, or still progressing) is aborted and counted as neither
promoted nor rolled back ("undecided"). Seconds to promotion run from the deploy (the canary's start
included) to the promotion, as fm recorded them.

wrk (Debian's has no -R) is paced by bench/live/pace.lua: random delays between requests on each
connection, corrected once a second toward the rate; the achieved rate of every service is measured
from wrk's own count and printed.

Prints a table (to stderr with --json), then exactly one JSON line on stdout:
{"servers": {"nginx": {"100": {"identical": {"runs", "promoted", "rolled_back", "undecided",
"promote_s_p95", …}, "errors_5pct": {"runs", "rolled_back", …}, "plus_40ms": {"runs", "rolled_back",
…}, "achieved_rps": [...]}, "1000": {...}}, "httpbin": {...}}, "seconds": S}. "rolled_back" counts
every rollback; "rolled_back_by_judge" leaves out those that were not the judge's verdict (the canary
never became healthy, or the controller failed, e.g. HAProxy's admin socket answering too late).
"identical" also lists, as "not_promoted", each identical release that was not promoted with fm's
reason; the log shows every rollout's outcome and reason as it ends, and the whole `fm explain` of each
identical release that was not promoted. Each cell's counts are logged when the cell ends (a line
"cell SERVER RATE: {...}"), so an interrupted run keeps the cells it finished; --keep keeps every
`fm up`'s state, for `fm explain` and `fm replay` afterwards.

README.md ("On a real server") gives the figures of the last full run, with its load average.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from fridaymorning.client import ApiClient, ApiUnavailableError
from fridaymorning.config import Config, load_config
from fridaymorning.errors import RolloutError
from fridaymorning.simulation.simulate import DEFAULT_PLAN
from fridaymorning.testing import FmUpProcess
from fridaymorning.views import explain_api_view

HERE = Path(__file__).resolve().parent / "live"
REPO = HERE.parents[1]
HTTPBIN_REQUIREMENTS = HERE / "requirements-httpbin.txt"
HTTPBIN_VENV = REPO / ".venv-httpbin"  # made once by httpbin_python(), beside the project's .venv
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])
HAPROXY = shutil.which("haproxy", path=SEARCH_PATH) or "/usr/sbin/haproxy"
NGINX = shutil.which("nginx", path=SEARCH_PATH)
WRK = shutil.which("wrk", path=SEARCH_PATH)

KINDS = ("identical", "errors_5pct", "plus_40ms")
VERSION_PREFIX = {"identical": "identical", "errors_5pct": "errors5pct", "plus_40ms": "plus40ms"}
TARGET_PROMOTE_S = 300.0  # identical releases: promoted by the judge alone within 5 minutes
CAP_S = 330.0  # a rollout still undecided this long after its deploy is aborted ("undecided")
WARMUP_S = 10.0  # traffic to the stable version before the first deploy
PAUSE_S = 2.0  # between one rollout's end and the service's next deploy
POLL_S = 0.5
GIVE_UP_S = 300.0  # past its cap, how long a rollout may take to end before the run counts it an error

RUNNING: list[subprocess.Popen[Any]] = []  # fm up and wrk processes, stopped if the run is interrupted
OUT = sys.stdout  # the table and progress; stderr with --json, so stdout holds the JSON line alone


SAY_LOCK = threading.Lock()  # cells and services report from their own threads


def say(*parts: object) -> None:
    with SAY_LOCK:
        print(*parts, file=OUT, flush=True)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --------------------------------------------------------------------------------------------------
# The servers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """How fm starts one instance of a release, which path it checks, and which path wrk requests."""

    name: str
    health_path: str
    path: str  # what the traffic requests
    services: dict[int, int]  # how many rollouts run side by side at each rate (what 2 cores carry)
    python: str = sys.executable  # httpbin: the python of its own venv (httpbin_python)

    def command(self, directory: Path, rate: int) -> list[str]:
        if self.name == "nginx":
            return [self.python, str(HERE / "nginx_release.py"), str(directory), "{version}", "{port}"]
        workers = "1" if rate <= 200 else "2"  # one gunicorn worker answers about 1,000 /get per second here
        return [
            self.python, "-m", "gunicorn",
            "--chdir", str(HERE),
            "--bind", "127.0.0.1:{port}",
            "--worker-class", "gthread", "--workers", workers, "--threads", "16",
            "--graceful-timeout", "2",
            "httpbin_release:app('{version}')",
        ]  # fmt: skip


SERVERS = {
    # With 14 services side by side (nginx and httpbin at 100 req/s, on a machine loaded by others),
    # fm up's API and HAProxy's admin socket answered late (timeouts of 15 s and 5 s): 7 at most.
    "nginx": Server("nginx", "/healthz", "/", services={100: 7, 1000: 3}),
    # One gunicorn worker answers about 1,000 /get per second here: 1000 req/s takes a core already,
    # and two such services side by side saturate the machine (the stable's p50 went to ~180 ms).
    "httpbin": Server("httpbin", "/status/200", "/get", services={100: 7, 1000: 1}),
}


# --------------------------------------------------------------------------------------------------
# One rollout, one service, one `fm up`
# --------------------------------------------------------------------------------------------------


@dataclass
class Release:
    kind: str
    version: str
    counted: bool = True  # a restoring release (after a bad one was promoted) is not counted


@dataclass
class Result:
    server: str
    rate: int
    service: str
    kind: str
    version: str
    outcome: str  # promoted | rolled_back | undecided | error
    seconds: float | None  # deploy to the end, as fm recorded it
    reason: str
    phase_at_cap: str | None = None
    explanation: str = ""  # `fm explain` of an identical release that was not promoted


@dataclass
class Slot:
    """One service of the `fm up`: its frontend, its traffic, and the releases it deploys in turn."""

    name: str
    frontend_port: int
    releases: list[Release]
    results: list[Result] = field(default_factory=list)
    wrk: subprocess.Popen[str] | None = None
    traffic: dict[str, Any] = field(default_factory=dict)
    skipped: int = 0  # releases not deployed because an earlier rollout never ended


def cell_config(directory: Path, server: Server, rate: int, slots: list[Slot]) -> dict[str, Any]:
    """An fm config of one service per slot, default analysis, the default simulated plan."""
    steps = [
        {
            "weight": step.weight,
            "min_duration_s": step.min_duration_s,
            "max_duration_s": step.max_duration_s,
            "min_requests": step.min_requests,
        }
        for step in DEFAULT_PLAN.steps
    ]
    document = {
        "state_dir": str(directory / "state"),
        "haproxy": {"binary": HAPROXY},
        "collector": {"listen": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"},
        "api": {"listen": f"127.0.0.1:{free_port()}"},
        "services": [
            {
                "name": slot.name,
                "frontend": f"127.0.0.1:{slot.frontend_port}",
                "stable": "v1",
                "platform": {
                    "command": server.command(directory / "instances", rate),
                    "health_path": server.health_path,
                    # gunicorn importing httpbin took more than the default 20 s on this loaded machine
                    "health_timeout_s": 60,
                    "stop_grace_s": 3,
                },
                "rollout": {"steps": steps},
            }
            for slot in slots
        ],
    }
    Config.model_validate(document)  # a mistake here should fail before anything starts
    return document


RPS_PER_CONNECTION = 10  # wrk connections: one per this many req/s (--rps-per-connection)


def connections(rate: int) -> int:
    """wrk connections for a rate: each makes about RPS_PER_CONNECTION requests a second, so the rate
    stays reachable while answers take up to 1/RPS_PER_CONNECTION s."""
    return max(2, rate // RPS_PER_CONNECTION)


def start_wrk(url: str, rate: int, duration_s: float) -> subprocess.Popen[str]:
    assert WRK is not None
    count = connections(rate)
    command = [
        WRK, "-t1", f"-c{count}", f"-d{math.ceil(duration_s)}s", "--timeout", "10s",
        "-s", str(HERE / "pace.lua"), url, "--", str(rate), str(count),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_wrk(process: subprocess.Popen[str]) -> dict[str, Any]:
    """SIGINT (wrk then reports), and the JSON line of pace.lua's done()."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                return dict(json.loads(line))
    return {"error": output[-300:]}


def patiently(call: Callable[[], Any], deadline: float) -> Any:
    """`call()`, again each second while fm up's API does not answer (it can answer late on a loaded
    machine), until `deadline`."""
    while True:
        try:
            return call()
        except ApiUnavailableError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)


def deploy(api: ApiClient, service: str, version: str, deadline: float) -> int:
    """Deploy `version`; the rollout's id. A deploy whose answer was lost is found in the service's list."""
    while True:
        try:
            return int(api.post(f"/services/{service}/deploy", {"version": version})["id"])
        except ApiUnavailableError:
            latest = patiently(lambda: api.get("/rollouts", service=service, limit=1), deadline)
            if latest and latest[0]["version"] == version:
                return int(latest[0]["id"])
        except RolloutError:  # the service's previous rollout is still ending
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"could not deploy {version} to {service}")
        time.sleep(1.0)


def run_rollout(
    api: ApiClient, service: str, release: Release
) -> tuple[str, float | None, str, str | None, dict[str, Any]]:
    """Deploy `release`, wait for its end (abort it at CAP_S): outcome, seconds, reason, phase at cap,
    and the rollout as the API gave it last (with its events)."""
    give_up = time.monotonic() + CAP_S + GIVE_UP_S
    rollout_id = deploy(api, service, release.version, give_up)
    deadline = time.monotonic() + CAP_S
    phase_at_cap = None
    aborted = False
    while True:
        state = patiently(lambda: api.get(f"/rollouts/{rollout_id}"), give_up)
        if state["phase"] in ("promoted", "rolled_back", "aborted"):
            break
        if time.monotonic() >= deadline and not aborted:
            phase_at_cap = phase_at_cap or str(state["phase"])
            try:
                api.post(f"/rollouts/{rollout_id}/abort")
                aborted = True
            except (ApiUnavailableError, RolloutError):
                pass  # again at the next look
        if time.monotonic() >= give_up:
            raise TimeoutError(f"rollout {rollout_id} still {state['phase']} {GIVE_UP_S:.0f} s after its cap")
        time.sleep(POLL_S)
    started, finished = state.get("started_at"), state.get("finished_at")
    seconds = round(finished - started, 1) if started is not None and finished is not None else None
    outcome = "undecided" if phase_at_cap is not None and state["phase"] == "aborted" else state["phase"]
    return str(outcome), seconds, str(state.get("reason", "")), phase_at_cap, dict(state)


def explained(rollout: dict[str, Any]) -> str:
    """The rollout as `fm explain` shows it: every event with its reason, every verdict's checks."""
    text = io.StringIO()
    Console(file=text, width=170, color_system=None).print(explain_api_view(rollout))
    return text.getvalue()


def drive_slot(config_path: Path, server: str, rate: int, slot: Slot, log: Callable[[str], None]) -> None:
    """Deploy the slot's releases one after another; restore an identical stable after a bad promotion."""
    api = ApiClient(load_config(config_path), timeout_s=15)
    queue = list(slot.releases)
    restores = 0
    while queue:
        release = queue.pop(0)
        rollout: dict[str, Any] = {}
        try:
            outcome, seconds, reason, phase_at_cap, rollout = run_rollout(api, slot.name, release)
        except Exception as error:  # the run goes on; the failure is counted and shown
            outcome, seconds, reason, phase_at_cap = "error", None, f"{type(error).__name__}: {error}", None
        if release.counted:
            result = Result(
                server, rate, slot.name, release.kind, release.version, outcome, seconds, reason, phase_at_cap
            )
            if release.kind == "identical" and outcome != "promoted" and rollout:
                result.explanation = explained(rollout)
            slot.results.append(result)
            log(describe(result))
            if result.explanation:
                log(f"fm explain of {server} {rate}/s {slot.name} {release.version}:\n{result.explanation}")
        if outcome == "error" and queue:  # its rollout never ended: the service takes no other deploy
            log(f"{slot.name}: {len(queue)} release(s) not deployed, the service's rollout never ended")
            slot.skipped = len([r for r in queue if r.counted])
            return
        if outcome == "promoted" and release.kind != "identical" and queue:
            restores += 1
            queue.insert(0, Release("identical", f"restore{restores}", counted=False))
        time.sleep(PAUSE_S)


def describe(result: Result) -> str:
    took = f"{result.seconds:.0f} s" if result.seconds is not None else "?"
    held = f" (was {result.phase_at_cap} at {CAP_S:.0f} s)" if result.phase_at_cap else ""
    return (
        f"{result.server:7} {result.rate:5}/s {result.service:4} {result.kind:11} {result.outcome:11}"
        f" {took:>6}{held}: {result.reason}"
    )


def plan_slots(releases: list[Release], slots: int) -> list[Slot]:
    """Spread the releases over `slots` services, round robin, so each kind is spread out."""
    return [Slot(f"s{index + 1}", free_port(), releases[index::slots]) for index in range(slots)]


def releases_for(counts: dict[str, int]) -> list[Release]:
    """Interleaved releases: identical, errors, slow, identical, … (each numbered within its kind)."""
    queues = {
        kind: [Release(kind, f"{VERSION_PREFIX[kind]}{n + 1}") for n in range(counts[kind])] for kind in KINDS
    }
    ordered: list[Release] = []
    while any(queues.values()):
        for kind in KINDS:
            if queues[kind]:
                ordered.append(queues[kind].pop(0))
    return ordered


def run_cell(
    root: Path, server: Server, rate: int, counts: dict[str, int], max_slots: int | None, started: float
) -> dict[str, Any]:
    """All the releases of one server at one rate, in one `fm up`."""
    directory = root / f"{server.name}-{rate}"
    (directory / "instances").mkdir(parents=True)
    directory.chmod(0o755)
    (directory / "instances").chmod(0o755)
    releases = releases_for(counts)
    side_by_side = server.services.get(rate, max(1, 1600 // rate))
    slot_count = max(1, min(len(releases), side_by_side, max_slots or len(releases)))
    slots = plan_slots(releases, slot_count)
    rounds = max(len(slot.releases) for slot in slots)
    config_path = directory / "fridaymorning.yaml"
    config_path.write_text(yaml.safe_dump(cell_config(directory, server, rate, slots)))
    say(
        f"[{time.monotonic() - started:5.0f} s] {server.name} at {rate}/s: {len(releases)} rollouts on "
        f"{slot_count} services side by side ({rounds} after one another at most)"
    )

    def log(line: str) -> None:
        say(f"[{time.monotonic() - started:5.0f} s] {line}")

    up = FmUpProcess(config_path, timeout_s=60)
    RUNNING.append(up.process)
    cell_started = time.monotonic()
    try:
        duration = WARMUP_S + rounds * (CAP_S + PAUSE_S + 30) + 60
        for slot in slots:
            slot.wrk = start_wrk(f"http://127.0.0.1:{slot.frontend_port}{server.path}", rate, duration)
            RUNNING.append(slot.wrk)
        time.sleep(WARMUP_S)
        threads = [
            threading.Thread(target=drive_slot, args=(config_path, server.name, rate, slot, log), daemon=True)
            for slot in slots
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for slot in slots:
            if slot.wrk is not None:
                slot.traffic = stop_wrk(slot.wrk)
        code = up.stop()
        if code != 0:
            log(f"fm up exited with status {code}; see {up.log_path}")
    results = [result for slot in slots for result in slot.results]
    achieved = [
        round(slot.traffic["requests"] / slot.traffic["duration_s"], 1)
        if slot.traffic.get("duration_s")
        else None
        for slot in slots
    ]
    failed_traffic = sum(
        sum(slot.traffic.get(key, 0) for key in ("connect_errors", "read_errors", "write_errors", "timeouts"))
        for slot in slots
    )
    cell = summarize(results)
    cell["achieved_rps"] = achieved
    cell["transport_errors"] = failed_traffic
    cell["services"] = slot_count
    cell["not_deployed"] = sum(slot.skipped for slot in slots)
    cell["seconds"] = round(time.monotonic() - cell_started, 1)
    log(
        f"{server.name} at {rate}/s done in {cell['seconds']:.0f} s; achieved req/s per service: "
        f"{achieved}; wrk transport errors: {failed_traffic}"
    )
    cell["results"] = [
        {"kind": r.kind, "outcome": r.outcome, "seconds": r.seconds, "reason": r.reason[:300]}
        for r in results
    ]
    return cell


def p95(values: list[float]) -> float | None:
    """The nearest-rank 95th percentile, or None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


# Rollbacks that are not the judge's verdict: the canary never became healthy, or the controller failed
# (e.g. HAProxy's admin socket answered too late).
NOT_JUDGED = ("canary did not start", "controller error")


def judged_back(result: Result) -> bool:
    """Whether the release was rolled back on the judge's verdict."""
    return result.outcome == "rolled_back" and not result.reason.startswith(NOT_JUDGED)


def summarize(results: list[Result]) -> dict[str, Any]:
    """The counts of one cell, in the JSON line's shape."""
    of = {kind: [r for r in results if r.kind == kind] for kind in KINDS}
    identical = of["identical"]
    promote_s = [r.seconds for r in identical if r.outcome == "promoted" and r.seconds is not None]
    cell: dict[str, Any] = {
        "identical": {
            "runs": len(identical),
            "promoted": sum(r.outcome == "promoted" for r in identical),
            "rolled_back": sum(r.outcome == "rolled_back" for r in identical),
            "rolled_back_by_judge": sum(judged_back(r) for r in identical),
            "undecided": sum(r.outcome in ("undecided", "aborted", "error") for r in identical),
            "promoted_within_5_min": sum(s <= TARGET_PROMOTE_S for s in promote_s),
            "promote_s_p95": p95(promote_s),
            # why each identical release that was not promoted was not: outcome, seconds, fm's reason
            "not_promoted": [
                {"outcome": r.outcome, "seconds": r.seconds, "at_cap": r.phase_at_cap, "reason": r.reason}
                for r in identical
                if r.outcome != "promoted"
            ],
        }
    }
    for kind in ("errors_5pct", "plus_40ms"):
        cell[kind] = {
            "runs": len(of[kind]),
            "rolled_back": sum(r.outcome == "rolled_back" for r in of[kind]),
            "rolled_back_by_judge": sum(judged_back(r) for r in of[kind]),
            "promoted": sum(r.outcome == "promoted" for r in of[kind]),
            "rollback_s_max": max(
                (r.seconds for r in of[kind] if r.outcome == "rolled_back" and r.seconds is not None),
                default=None,
            ),
        }
    return cell


def print_table(report: dict[str, Any]) -> None:
    """One line per server and rate; "rolled back" is "all (by the judge)"."""
    say(f"{'server':8} {'rate':>5} | identical: runs promoted rolled_back undecided p95_s | "
        "errors_5pct: runs rolled_back | plus_40ms: runs rolled_back | req/s achieved")  # fmt: skip
    for name, rates in report["servers"].items():
        for rate, cell in rates.items():
            same, errors, slow = cell["identical"], cell["errors_5pct"], cell["plus_40ms"]
            achieved = [a for a in cell["achieved_rps"] if a is not None]
            spread = f"{min(achieved):.0f}-{max(achieved):.0f}" if achieved else "?"
            p95_s = "-" if same["promote_s_p95"] is None else f"{same['promote_s_p95']:.0f}"

            def back(counts: dict[str, Any]) -> str:
                return f"{counts['rolled_back']} ({counts['rolled_back_by_judge']})"

            say(
                f"{name:8} {rate:>5} | {same['runs']:15} {same['promoted']:8} {back(same):>11} "
                f"{same['undecided']:9} {p95_s:>5} | {errors['runs']:17} {back(errors):>11} | "
                f"{slow['runs']:15} {back(slow):>11} | {spread}"
            )


def missing_programs(servers: list[str]) -> list[str]:
    """Install advice for each program this run needs and cannot find."""
    advice = []
    if not Path(HAPROXY).exists():
        advice.append("haproxy: sudo apt-get install -y haproxy")
    if WRK is None:
        advice.append("wrk: sudo apt-get install -y wrk")
    if "nginx" in servers and NGINX is None:
        advice.append("nginx: sudo apt-get install -y nginx-light")
    return advice


def httpbin_python(venv: Path) -> Path:
    """The python of `venv`, a venv of its own holding httpbin and gunicorn as
    bench/live/requirements-httpbin.txt pins them; made (with pip, from PyPI) when missing or made from
    other requirements, once: a lock beside it lets two runs share it. Exits 2 when pip fails."""
    wanted = hashlib.sha256(HTTPBIN_REQUIREMENTS.read_bytes()).hexdigest()
    python = venv / "bin" / "python"
    stamp = venv / ".requirements-sha256"  # written last: a venv without it is incomplete
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
            return python
        say(f"making {venv} for httpbin (once): pip install -r {HTTPBIN_REQUIREMENTS.name}")
        shutil.rmtree(venv, ignore_errors=True)
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
             "-r", str(HTTPBIN_REQUIREMENTS)],
            [str(python), "-c", "import gunicorn, httpbin"],
        ]  # fmt: skip
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                say((done.stdout + done.stderr)[-3000:])
                say(f"could not make {venv} ({' '.join(step[:4])} exited {done.returncode}); pip needs PyPI")
                sys.exit(2)
        stamp.write_text(wanted + "\n")
    return python


def main() -> None:
    global OUT, RPS_PER_CONNECTION
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="one release of each kind (by default nginx at 1000 req/s)"
    )
    parser.add_argument(
        "--json", action="store_true", help="the table to stderr; only the JSON line on stdout"
    )
    parser.add_argument("--servers", help="comma-separated: nginx, httpbin (default: both; --quick: nginx)")
    parser.add_argument(
        "--rates", help="comma-separated requests per second per service (default: 100,1000; --quick: 1000)"
    )
    parser.add_argument("--identical", type=int, default=10, help="identical releases per server and rate")
    parser.add_argument("--bad", type=int, default=2, help="releases of each bad kind per server and rate")
    parser.add_argument("--max-services", type=int, default=None, help="at most this many rollouts at once")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, state)")
    parser.add_argument(
        "--rps-per-connection",
        type=int,
        default=RPS_PER_CONNECTION,
        help="one wrk connection per this many req/s (default: %(default)s)",
    )
    parser.add_argument(
        "--httpbin-venv",
        type=Path,
        default=HTTPBIN_VENV,
        help="httpbin's own venv, made once from bench/live/requirements-httpbin.txt (default: %(default)s)",
    )
    options = parser.parse_args()
    RPS_PER_CONNECTION = max(1, options.rps_per_connection)
    if options.json:
        OUT = sys.stderr
    servers_text = options.servers or ("nginx" if options.quick else "nginx,httpbin")
    servers = [s.strip() for s in servers_text.split(",") if s.strip()]
    rates = [int(r) for r in (options.rates or ("1000" if options.quick else "100,1000")).split(",")]
    counts = (
        dict.fromkeys(KINDS, 1)
        if options.quick
        else {"identical": options.identical, "errors_5pct": options.bad, "plus_40ms": options.bad}
    )
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        sys.exit(f"unknown server(s) {unknown}; known: {sorted(SERVERS)}")
    advice = missing_programs(servers)
    if advice:
        sys.exit("missing programs; install them:\n  " + "\n  ".join(advice))
    servers_of = dict(SERVERS)
    if "httpbin" in servers:
        python = httpbin_python(options.httpbin_venv.resolve())
        servers_of["httpbin"] = dataclasses.replace(SERVERS["httpbin"], python=str(python))
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="fm-live-"))
    root.chmod(0o755)  # nginx's worker (an unprivileged user when started as root) reads its page here
    report: dict[str, Any] = {"servers": {name: {} for name in servers}}
    failures: list[BaseException] = []

    def run_server(name: str) -> None:
        """The server's rates one after the other; the servers run side by side."""
        try:
            for rate in rates:
                cell = run_cell(root, servers_of[name], rate, counts, options.max_services, started)
                report["servers"][name][str(rate)] = cell
                counts_only = {key: value for key, value in cell.items() if key != "results"}
                say(f"cell {name} {rate}: {json.dumps(counts_only)}")  # kept if a later cell is interrupted
        except BaseException as error:  # re-raised in the main thread
            failures.append(error)

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill: the same clean stop as Ctrl-C
    try:
        threads = [threading.Thread(target=run_server, args=(name,), daemon=True) for name in servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
    except KeyboardInterrupt:
        say("interrupted: stopping every fm up and wrk")
        for process in RUNNING:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in RUNNING:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        raise
    finally:
        if options.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report["seconds"] = round(time.monotonic() - started, 1)
    say()
    print_table(report)
    say(f"whole run: {report['seconds']:.0f} s")
    for rates_report in report["servers"].values():
        for cell in rates_report.values():
            del cell["results"]  # shown above, line by line; the JSON line keeps the counts
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted; every fm up and wrk was stopped")
