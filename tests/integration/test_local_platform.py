"""LocalPlatform with real processes: the demo app, failing commands, stopping, and adoption by a new fm."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fridaymorning.config import PlatformConfig
from fridaymorning.demo.traffic import TrafficGenerator
from fridaymorning.errors import PlatformError
from fridaymorning.platform.local import (
    STATE_FILE_NAME,
    LocalPlatform,
    build_argv,
    cleanup_stale,
    free_port,
)
from fridaymorning.procfs import read_cmdline, read_start_time
from fridaymorning.testing import EVENT_DEADLINE_S, wait_for

pytestmark = pytest.mark.timeout(600)

DEMO_COMMAND = [sys.executable, "-m", "fridaymorning.demo.app", "--port", "{port}", "--version", "{version}"]

# Answers 200 to everything and ignores SIGTERM, to exercise the SIGKILL escalation.
STUBBORN_SERVER = """
import http.server, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
"""

# Fails like a lost port race the first time, then runs the demo app.
LOSES_FIRST_PORT = """
import os, sys
marker, port, version = sys.argv[1:]
if not os.path.exists(marker):
    open(marker, "w").close()
    sys.exit("OSError: [Errno 98] Address already in use")
demo = ["-m", "fridaymorning.demo.app", "--port", port, "--version", version]
os.execv(sys.executable, [sys.executable, *demo])
"""

# Replica 2 fails at once; the others run the demo app.
SECOND_REPLICA_FAILS = """
import sys
from fridaymorning.demo.app import main
port, index = sys.argv[1:]
sys.exit(4 if index == "2" else main(["--port", port, "--version", "v1"]))
"""

# A parent fm stand-in: starts two instances in a workdir, prints [[pid, port], ...], then waits to be killed.
PARENT = """
import asyncio, json, sys
from fridaymorning.config import PlatformConfig
from fridaymorning.platform.local import LocalPlatform

async def main():
    config = PlatformConfig(command=json.loads(sys.argv[1]), health_timeout_s=15)
    platform = LocalPlatform(config, workdir=sys.argv[2])
    instances = await platform.start("v1", 2)
    print(json.dumps([[int(instance.ref), instance.port] for instance in instances]), flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def demo_config(**overrides: object) -> PlatformConfig:
    settings: dict[str, object] = {"command": DEMO_COMMAND, "health_timeout_s": 15, "stop_grace_s": 3}
    settings.update(overrides)
    return PlatformConfig.model_validate(settings)


def is_gone(pid: int) -> bool:
    """True when no process has this pid, or only a zombie does (it no longer runs anything)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone, or going while being read (ProcessLookupError)
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def wait_healthy(url: str) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=1) as client:
        while True:
            try:
                if (await client.get(url)).is_success:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


async def wait_until_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_gone(pid):
            return True
        await asyncio.sleep(0.05)
    return is_gone(pid)


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[LocalPlatform]:
    local = LocalPlatform(demo_config(), workdir=str(tmp_path))
    yield local
    await asyncio.wait_for(local.close(), timeout=EVENT_DEADLINE_S)


async def test_replicas_start_on_distinct_ports_and_answer_health(platform: LocalPlatform) -> None:
    """start() returns one healthy instance per replica, each its own process on its own port."""
    instances = await asyncio.wait_for(platform.start("v1", 2), timeout=EVENT_DEADLINE_S)
    assert [instance.index for instance in instances] == [1, 2]
    assert len({instance.port for instance in instances}) == 2
    assert len({instance.ref for instance in instances}) == 2
    for instance in instances:
        assert instance.version == "v1"
        assert await platform.health(instance)


async def test_traffic_is_tallied_under_the_serving_version(platform: LocalPlatform) -> None:
    """100 requests of generated load against a v2 instance are all counted under 'v2', without errors."""
    [instance] = await asyncio.wait_for(platform.start("v2", 1), timeout=EVENT_DEADLINE_S)
    traffic = TrafficGenerator(f"http://127.0.0.1:{instance.port}/", rate_per_s=200)
    traffic.start()
    await wait_for(lambda: sum(c["requests"] for c in traffic.snapshot().values()) >= 100, "100 answers")
    await asyncio.wait_for(traffic.stop(), timeout=EVENT_DEADLINE_S)
    tally = traffic.snapshot()
    assert set(tally) == {"v2"}
    assert tally["v2"]["requests"] >= 100
    assert tally["v2"]["errors"] == 0


async def test_configured_env_reaches_the_child(tmp_path: Path) -> None:
    """config.env is passed to the instance: FM_DEMO_ERROR_RATE=1 makes a canary that always answers 500."""
    platform = LocalPlatform(demo_config(env={"FM_DEMO_ERROR_RATE": "1", "FM_DEMO_LATENCY_FACTOR": "0"}))
    try:
        [instance] = await asyncio.wait_for(platform.start("v2", 1), timeout=EVENT_DEADLINE_S)
        traffic = TrafficGenerator(f"http://127.0.0.1:{instance.port}/", rate_per_s=500, max_requests=20)
        await asyncio.wait_for(traffic.run(), timeout=EVENT_DEADLINE_S)
        assert traffic.snapshot() == {"v2": {"requests": 20, "errors": 20, "transport_errors": 0}}
    finally:
        await platform.close()


async def test_stop_leaves_no_process_and_clears_the_state_file(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    """While running, the instances are recorded in workdir; after stop() their pids no longer exist."""
    instances = await asyncio.wait_for(platform.start("v1", 2), timeout=EVENT_DEADLINE_S)
    pids = [int(instance.ref) for instance in instances]
    recorded = json.loads((tmp_path / STATE_FILE_NAME).read_text())["instances"]
    assert sorted(entry["pid"] for entry in recorded) == sorted(pids)

    await asyncio.wait_for(platform.stop(instances), timeout=EVENT_DEADLINE_S)

    for pid in pids:
        with pytest.raises(ProcessLookupError):  # not even a zombie: stop() reaped it
            os.kill(pid, 0)
    assert platform.instances == []
    assert not (tmp_path / STATE_FILE_NAME).exists()


async def test_recorded_instances_are_recognised_by_cleanup_stale(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    """What is recorded in workdir (argv, cmdline, start time) matches the running instances, so a restarted
    fm's cleanup_stale finds and kills the instances a dead fm left."""
    instances = await asyncio.wait_for(platform.start("v1", 2), timeout=EVENT_DEADLINE_S)
    pids = sorted(int(instance.ref) for instance in instances)
    assert sorted(cleanup_stale(tmp_path)) == pids
    for pid in pids:
        assert await wait_until_gone(pid, timeout_s=5)


async def test_close_stops_every_instance_still_running(tmp_path: Path) -> None:
    """close() is the shutdown path: it stops whatever was started and not stopped yet."""
    platform = LocalPlatform(demo_config())
    instances = await asyncio.wait_for(platform.start("v1", 1), timeout=EVENT_DEADLINE_S)
    await asyncio.wait_for(platform.close(), timeout=EVENT_DEADLINE_S)
    with pytest.raises(ProcessLookupError):
        os.kill(int(instances[0].ref), 0)


async def test_stop_kills_an_instance_that_ignores_sigterm() -> None:
    """After stop_grace_s without exiting, the instance is SIGKILLed, so stop() is bounded in time."""
    command = [sys.executable, "-c", STUBBORN_SERVER, "{port}"]
    platform = LocalPlatform(PlatformConfig(command=command, health_timeout_s=15, stop_grace_s=0.5))
    [instance] = await asyncio.wait_for(platform.start("v1", 1), timeout=EVENT_DEADLINE_S)
    started = time.monotonic()
    await asyncio.wait_for(platform.stop([instance]), timeout=EVENT_DEADLINE_S)
    assert 0.4 < time.monotonic() - started < 5
    with pytest.raises(ProcessLookupError):
        os.kill(int(instance.ref), 0)


async def test_command_that_exits_at_once_raises_with_its_stderr() -> None:
    """The error names the version, the program, the exit code and the end of its stderr."""
    script = "import sys; sys.stderr.write('config error: no database URL\\n'); sys.exit(3)"
    platform = LocalPlatform(PlatformConfig(command=[sys.executable, "-c", script, "{port}"]))
    with pytest.raises(PlatformError) as failure:
        await asyncio.wait_for(platform.start("v7", 1), timeout=EVENT_DEADLINE_S)
    message = str(failure.value)
    assert "v7" in message
    assert sys.executable in message
    assert "exit code 3" in message
    assert "config error: no database URL" in message
    assert platform.instances == []
    await platform.close()


async def test_missing_program_raises_naming_it() -> None:
    """A command whose program does not exist fails with PlatformError saying which program."""
    platform = LocalPlatform(PlatformConfig(command=["/nonexistent/fm-demo", "--port", "{port}"]))
    with pytest.raises(PlatformError, match="'/nonexistent/fm-demo' was not found"):
        await asyncio.wait_for(platform.start("v1", 1), timeout=EVENT_DEADLINE_S)
    await platform.close()


async def test_instance_that_never_gets_healthy_is_stopped_and_reported() -> None:
    """After health_timeout_s without a 2xx, start() stops the process and quotes its stderr."""
    script = (
        "import sys, time; sys.stderr.write('still warming caches\\n'); sys.stderr.flush(); time.sleep(60)"
    )
    platform = LocalPlatform(
        PlatformConfig(command=[sys.executable, "-c", script, "{port}"], health_timeout_s=1)
    )
    started = time.monotonic()
    with pytest.raises(PlatformError, match="within 1s") as failure:
        await asyncio.wait_for(platform.start("v1", 1), timeout=EVENT_DEADLINE_S)
    assert time.monotonic() - started < 10
    assert "still warming caches" in str(failure.value)
    assert platform.instances == []
    await platform.close()


async def test_one_failing_replica_stops_the_healthy_ones(tmp_path: Path) -> None:
    """start() is all or nothing: if replica 2 fails, replica 1 is stopped too, and nothing is recorded."""
    command = [sys.executable, "-c", SECOND_REPLICA_FAILS, "{port}", "{index}"]
    platform = LocalPlatform(
        PlatformConfig(command=command, health_timeout_s=15),
        workdir=str(tmp_path),
    )
    with pytest.raises(PlatformError, match="exit code 4"):
        await asyncio.wait_for(platform.start("v1", 2), timeout=EVENT_DEADLINE_S)
    assert platform.instances == []
    assert not (tmp_path / STATE_FILE_NAME).exists()
    await platform.close()


async def test_lost_port_race_is_retried_once_on_another_port(tmp_path: Path) -> None:
    """A child that dies with 'Address already in use' is restarted once, on a fresh port."""
    marker = tmp_path / "first-attempt-done"
    command = [sys.executable, "-c", LOSES_FIRST_PORT, str(marker), "{port}", "{version}"]
    platform = LocalPlatform(PlatformConfig(command=command, health_timeout_s=15))
    try:
        [instance] = await asyncio.wait_for(platform.start("v1", 1), timeout=EVENT_DEADLINE_S)
        assert marker.exists()
        assert await platform.health(instance)
    finally:
        await platform.close()


async def test_demo_app_exits_zero_on_sigterm() -> None:
    """The demo service shuts down cleanly and quickly on SIGTERM, as a well-behaved instance should."""
    port = free_port("127.0.0.1")
    process = await asyncio.create_subprocess_exec(
        *build_argv(DEMO_COMMAND, port=port, version="v1", index=1)
    )
    try:
        await asyncio.wait_for(wait_healthy(f"http://127.0.0.1:{port}/healthz"), timeout=EVENT_DEADLINE_S)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=3) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def kill_if_running(pid: int) -> None:
    """Test cleanup: SIGKILL a process (and its group) this test started, unless it is already gone."""
    if not is_gone(pid):
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:  # never the test runner's own group
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)


def write_entries(workdir: Path, entries: list[dict[str, object]]) -> None:
    (workdir / STATE_FILE_NAME).write_text(json.dumps({"fm_pid": 1, "instances": entries}))


def entry_for(
    pid: int, port: int, *, cmdline: list[str] | None = None, **fields: object
) -> dict[str, object]:
    """A file entry for a live process, with its real start time and command line unless overridden."""
    actual = read_cmdline(pid)
    assert actual is not None
    entry: dict[str, object] = {
        "pid": pid,
        "version": "v1",
        "label": "",
        "index": 1,
        "host": "127.0.0.1",
        "port": port,
        "argv": actual,
        "cmdline": cmdline if cmdline is not None else actual,
        "start_time": read_start_time(pid),
    }
    entry.update(fields)
    return entry


async def test_file_records_what_identifies_each_running_instance(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    """Each entry holds the instance's pid, name fields, port, its exact argv (which /proc shows, as no
    wrapper runs before it) and its /proc start time."""
    instances = await asyncio.wait_for(
        platform.start("v1", 2, label="v1__baseline"), timeout=EVENT_DEADLINE_S
    )
    entries = json.loads((tmp_path / STATE_FILE_NAME).read_text())["instances"]
    by_pid = {entry["pid"]: entry for entry in entries}
    for instance in instances:
        entry = by_pid[int(instance.ref)]
        argv = build_argv(DEMO_COMMAND, port=instance.port, version="v1", index=instance.index)
        assert entry == {
            "pid": int(instance.ref),
            "version": "v1",
            "label": "v1__baseline",
            "index": instance.index,
            "host": "127.0.0.1",
            "port": instance.port,
            "argv": argv,
            "cmdline": argv,
            "start_time": read_start_time(int(instance.ref)),
        }
        assert read_cmdline(int(instance.ref)) == argv


async def test_labelled_instances_are_named_and_numbered_by_their_label(platform: LocalPlatform) -> None:
    """start('v1', 1, label='v1__baseline') runs v1 as server 'v1__baseline-1', counted apart from 'v1-N'."""
    [stable] = await asyncio.wait_for(platform.start("v1", 1), timeout=EVENT_DEADLINE_S)
    [baseline] = await asyncio.wait_for(
        platform.start("v1", 1, label="v1__baseline"), timeout=EVENT_DEADLINE_S
    )
    assert stable.server == "v1-1"
    assert (baseline.version, baseline.label, baseline.index) == ("v1", "v1__baseline", 1)
    assert baseline.server == "v1__baseline-1"
    assert await platform.health(baseline)


async def test_indices_continue_after_the_running_ones_and_skip_gaps(platform: LocalPlatform) -> None:
    """A second start() of a version continues after the highest running index; a stopped index is not
    reused while a higher one runs, so two running instances never share a server name."""
    first = await asyncio.wait_for(platform.start("v1", 2), timeout=EVENT_DEADLINE_S)
    await asyncio.wait_for(platform.stop(first[:1]), timeout=EVENT_DEADLINE_S)
    [third] = await asyncio.wait_for(platform.start("v1", 1), timeout=EVENT_DEADLINE_S)
    assert third.index == 3
    assert sorted(instance.server for instance in platform.instances) == ["v1-2", "v1-3"]


async def test_instances_survive_a_killed_fm_and_are_adopted_by_the_next(tmp_path: Path) -> None:
    """After SIGKILL of fm, its instances keep serving; a new LocalPlatform on the same workdir adopts them
    with their pids and ports, numbers a new instance after them (v1-3), and close() stops all of them."""
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PARENT,
        json.dumps(DEMO_COMMAND),
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
    )
    pids: list[int] = []
    platform = LocalPlatform(demo_config(), workdir=str(tmp_path))
    try:
        line = await asyncio.wait_for(parent.stdout.readline(), timeout=EVENT_DEADLINE_S)  # type: ignore[union-attr]
        started = {pid: port for pid, port in json.loads(line)}
        pids.extend(started)
        parent.kill()
        await parent.wait()

        await asyncio.sleep(0.3)  # would a dying parent take them down, it would have by now
        for pid, port in started.items():
            assert not is_gone(pid)
            await asyncio.wait_for(wait_healthy(f"http://127.0.0.1:{port}/healthz"), timeout=5)

        adopted = await asyncio.wait_for(platform.adopt(), timeout=EVENT_DEADLINE_S)
        assert sorted((int(i.ref), i.port, i.version, i.label) for i in adopted) == sorted(
            (pid, port, "v1", "") for pid, port in started.items()
        )
        assert sorted(instance.index for instance in adopted) == [1, 2]

        [fresh] = await asyncio.wait_for(platform.start("v1", 1), timeout=EVENT_DEADLINE_S)
        pids.append(int(fresh.ref))
        assert fresh.server == "v1-3"
        recorded = json.loads((tmp_path / STATE_FILE_NAME).read_text())["instances"]
        assert sorted(entry["pid"] for entry in recorded) == sorted(pids)

        await asyncio.wait_for(platform.close(), timeout=EVENT_DEADLINE_S)
        for pid in pids:
            assert await wait_until_gone(pid, timeout_s=5)
        assert not (tmp_path / STATE_FILE_NAME).exists()
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        await asyncio.wait_for(platform.close(), timeout=EVENT_DEADLINE_S)
        for pid in pids:
            kill_if_running(pid)


async def test_reused_pid_is_neither_adopted_nor_killed(tmp_path: Path) -> None:
    """A recorded pid now held by an unrelated process (here `sleep 30`) is not adopted and not signalled,
    whether its command line differs or only its start time does; the entry is dropped from the file."""
    sleeper = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)
    try:
        start_time = read_start_time(sleeper.pid)
        assert start_time is not None
        write_entries(
            tmp_path,
            [
                entry_for(sleeper.pid, free_port("127.0.0.1"), cmdline=DEMO_COMMAND),
                entry_for(sleeper.pid, free_port("127.0.0.1"), index=2, start_time=start_time - 1),
            ],
        )
        platform = LocalPlatform(demo_config(stop_grace_s=0.5), workdir=str(tmp_path))
        assert await asyncio.wait_for(platform.adopt(health_timeout_s=0.5), timeout=EVENT_DEADLINE_S) == []
        await asyncio.wait_for(platform.close(), timeout=EVENT_DEADLINE_S)
        await asyncio.sleep(0.2)
        assert not is_gone(sleeper.pid)
        assert sleeper.returncode is None
        assert not (tmp_path / STATE_FILE_NAME).exists()
    finally:
        if sleeper.returncode is None:
            sleeper.kill()
        await sleeper.wait()


async def test_recorded_instance_that_fails_health_is_stopped_not_adopted(tmp_path: Path) -> None:
    """A process verifiably ours (pid, start time, command line) that does not answer its health check is
    stopped by adopt() (SIGTERM to its group) and not returned; nothing is left in the file."""
    sleeper = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(30)", start_new_session=True
    )
    try:
        await asyncio.sleep(0.1)  # let exec complete, so /proc shows the final command line
        write_entries(tmp_path, [entry_for(sleeper.pid, free_port("127.0.0.1"))])
        platform = LocalPlatform(demo_config(stop_grace_s=2), workdir=str(tmp_path))
        assert await asyncio.wait_for(platform.adopt(health_timeout_s=0.5), timeout=EVENT_DEADLINE_S) == []
        assert await asyncio.wait_for(sleeper.wait(), timeout=5) == -signal.SIGTERM
        assert platform.instances == []
        assert not (tmp_path / STATE_FILE_NAME).exists()
        await platform.close()
    finally:
        if sleeper.returncode is None:
            sleeper.kill()
        await sleeper.wait()


async def test_unadopted_records_of_a_previous_fm_stay_listed(tmp_path: Path) -> None:
    """A platform that starts and closes without adopting never drops a previous fm's live records: they stay
    in the file (and their processes run) for a later adopt() or cleanup_stale()."""
    sleeper = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(30)", start_new_session=True
    )
    try:
        await asyncio.sleep(0.1)
        previous = entry_for(sleeper.pid, free_port("127.0.0.1"), index=7)
        write_entries(tmp_path, [previous])
        platform = LocalPlatform(demo_config(), workdir=str(tmp_path))
        [instance] = await asyncio.wait_for(platform.start("v2", 1), timeout=EVENT_DEADLINE_S)
        recorded = json.loads((tmp_path / STATE_FILE_NAME).read_text())["instances"]
        assert sorted(entry["pid"] for entry in recorded) == sorted([sleeper.pid, int(instance.ref)])
        await asyncio.wait_for(platform.close(), timeout=EVENT_DEADLINE_S)
        assert json.loads((tmp_path / STATE_FILE_NAME).read_text())["instances"] == [previous]
        assert sleeper.returncode is None
    finally:
        if sleeper.returncode is None:
            sleeper.kill()
        await sleeper.wait()


async def test_adopted_instance_that_ignores_sigterm_is_killed_by_close(tmp_path: Path) -> None:
    """stop()/close() of an adopted instance (not our child, so polled in /proc) escalate to SIGKILL after
    stop_grace_s, so stopping stays bounded in time."""
    port = free_port("127.0.0.1")
    stubborn = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STUBBORN_SERVER, str(port), start_new_session=True
    )
    try:
        await asyncio.wait_for(wait_healthy(f"http://127.0.0.1:{port}/"), timeout=EVENT_DEADLINE_S)
        write_entries(tmp_path, [entry_for(stubborn.pid, port)])
        platform = LocalPlatform(
            PlatformConfig(command=DEMO_COMMAND, health_path="/", stop_grace_s=0.5), workdir=str(tmp_path)
        )
        [adopted] = await asyncio.wait_for(platform.adopt(), timeout=EVENT_DEADLINE_S)
        assert (int(adopted.ref), adopted.port, adopted.server) == (stubborn.pid, port, "v1-1")
        started = time.monotonic()
        await asyncio.wait_for(platform.close(), timeout=EVENT_DEADLINE_S)
        assert 0.4 < time.monotonic() - started < 5
        assert await asyncio.wait_for(stubborn.wait(), timeout=5) == -signal.SIGKILL
        assert not (tmp_path / STATE_FILE_NAME).exists()
    finally:
        if stubborn.returncode is None:
            stubborn.kill()
        await stubborn.wait()


async def test_script_that_execs_its_server_is_recorded_as_it_runs(tmp_path: Path) -> None:
    """A `#!` wrapper script that execs the real server shows another command line than its argv; the one
    /proc shows once healthy is recorded, so a later fm can still vouch for the instance."""
    script = tmp_path / "run-demo.sh"
    script.write_text(
        f'#!/bin/sh\nexec {sys.executable} -m fridaymorning.demo.app --port "$1" --version "$2"\n'
    )
    script.chmod(0o755)
    platform = LocalPlatform(
        PlatformConfig(command=[str(script), "{port}", "{version}"], health_timeout_s=15),
        workdir=str(tmp_path),
    )
    try:
        [instance] = await asyncio.wait_for(platform.start("v1", 1), timeout=EVENT_DEADLINE_S)
        [entry] = json.loads((tmp_path / STATE_FILE_NAME).read_text())["instances"]
        assert entry["argv"] == [str(script), str(instance.port), "v1"]
        assert entry["cmdline"] == read_cmdline(int(instance.ref))
        assert entry["cmdline"][1:] == [
            "-m",
            "fridaymorning.demo.app",
            "--port",
            str(instance.port),
            "--version",
            "v1",
        ]
        assert cleanup_stale(tmp_path) == [int(instance.ref)]
        assert await wait_until_gone(int(instance.ref), timeout_s=5)
    finally:
        await asyncio.wait_for(platform.close(), timeout=EVENT_DEADLINE_S)
