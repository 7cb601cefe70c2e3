"""`fm demo --json`: the whole product on the embedded defaults, as `make demo` runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fridaymorning.procfs import pids, process_alive, read_cmdline

pytestmark = [pytest.mark.haproxy, pytest.mark.slow]


def processes_of(state_dir: str) -> list[str]:
    """Command lines of live processes that belong to the demo run in `state_dir`: its HAProxy names
    files in it, and its sample-service instances write their output there. Other demos on the
    machine are not counted."""
    found = []
    for pid in pids():
        argv = read_cmdline(pid)
        try:
            outputs = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (1, 2)]
        except OSError:
            continue  # gone while we looked, or not ours to read
        command = " ".join(argv or ())
        if argv and process_alive(pid) and any(state_dir in text for text in (command, *outputs)):
            found.append(command)
    return found


def state_dir_of(stderr: str) -> str:
    """The demo's state directory, from its 'HAProxy running with <dir>/haproxy.cfg' line."""
    match = re.search(r"(/\S*fm-demo-\w+)/haproxy\.cfg", stderr)
    assert match, stderr[-2000:]
    return match.group(1)


def run_bounded(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run `argv`; past `timeout_s` stop it with SIGTERM, as Ctrl-C would, so it stops its HAProxy and
    instances (a SIGKILL would leave them serving: the data plane outlives its controller by design)."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
        raise AssertionError(f"fm demo took over {timeout_s} s: {stdout[-2000:]} {stderr[-2000:]}") from None
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def test_demo_promotes_v2_rolls_back_v3_and_leaves_nothing(haproxy_binary: str) -> None:
    """v2 is promoted, v3 rolled back, no stable request fails, exit status 0, and no process is left.

    Each release says why it ended; progress goes to stderr while standard output carries the JSON
    alone; the shutdown logs no traceback; and the state directory of a successful demo is removed.
    """
    result = run_bounded([sys.executable, "-m", "fridaymorning", "demo", "--json"], timeout_s=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    [line] = result.stdout.strip().splitlines()
    summary = json.loads(line)
    outcomes = [(release["version"], release["outcome"]) for release in summary["releases"]]
    assert outcomes == [("v2", "promoted"), ("v3", "rolled_back")]
    assert all(release["reason"] for release in summary["releases"])
    assert summary["failed_stable_requests"] == 0
    assert summary["releases"][1]["canary_errors"] > 0
    assert summary["requests"] > 1000
    assert "state_dir" not in summary
    assert re.search(r"^v2 +\d+ s: progressing, step 1 of 2 at 20%; requests v1 \d+", result.stderr, re.M)
    assert "Traceback" not in result.stderr
    state_dir = state_dir_of(result.stderr)
    assert processes_of(state_dir) == []
    assert not Path(state_dir).exists()


def test_demo_stopped_by_sigterm_leaves_nothing(haproxy_binary: str) -> None:
    """SIGTERM mid-demo stops it in order: exit status 1 with a message, no process and no state left."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fridaymorning", "demo", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    said = []
    for line in process.stderr:  # until the canary is deployed: everything the demo starts runs
        said.append(line)
        if line.startswith("deploying v2"):
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr[-2000:]
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    state_dir = state_dir_of("".join(said))
    assert processes_of(state_dir) == []
    assert not Path(state_dir).exists()
