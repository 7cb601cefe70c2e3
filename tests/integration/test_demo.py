"""`fm demo --json`: the whole product on the embedded defaults, as `make demo` runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.haproxy, pytest.mark.slow]


def demo_processes() -> list[str]:
    """Command lines of live processes that belong to a demo (sample-service instances or its HAProxy)."""
    found = []
    result = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    for line in result.stdout.splitlines():
        if "fridaymorning.demo.app" in line or "fm-demo-" in line:
            found.append(line)
    return found


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
    """v2 is promoted, v3 rolled back, no stable request fails, exit status 0, and no process is left."""
    before = demo_processes()
    result = run_bounded([sys.executable, "-m", "fridaymorning", "demo", "--json"], timeout_s=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    outcomes = [(release["version"], release["outcome"]) for release in summary["releases"]]
    assert outcomes == [("v2", "promoted"), ("v3", "rolled_back")]
    assert summary["failed_stable_requests"] == 0
    assert summary["releases"][1]["canary_errors"] > 0
    assert summary["requests"] > 1000
    assert demo_processes() == before


def test_demo_stopped_by_sigterm_leaves_nothing(haproxy_binary: str) -> None:
    """SIGTERM mid-demo stops it in order: exit status 1 with a message, and no process left."""
    import time

    before = demo_processes()
    process = subprocess.Popen(
        [sys.executable, "-m", "fridaymorning", "demo", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(demo_processes()) < len(before) + 3 and time.monotonic() < deadline:
        time.sleep(0.2)  # until HAProxy (master and worker) and v1 run
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr[-2000:]
    assert "interrupted" in stderr
    assert demo_processes() == before
