"""`fm demo --json`: the whole product on the embedded defaults, as `make demo` runs it."""

from __future__ import annotations

import json
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


def test_demo_promotes_v2_rolls_back_v3_and_leaves_nothing(haproxy_binary: str) -> None:
    """v2 is promoted, v3 rolled back, no stable request fails, exit status 0, and no process is left."""
    before = demo_processes()
    result = subprocess.run(
        [sys.executable, "-m", "fridaymorning", "demo", "--json"], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    outcomes = [(release["version"], release["outcome"]) for release in summary["releases"]]
    assert outcomes == [("v2", "promoted"), ("v3", "rolled_back")]
    assert summary["failed_stable_requests"] == 0
    assert summary["releases"][1]["canary_errors"] > 0
    assert summary["requests"] > 1000
    assert demo_processes() == before
