"""`bench/live.py --quick --json` runs end to end: real nginx behind a real `fm up`, under wrk traffic.

Only outcomes are asserted: the JSON line has its documented shape, and the release that fails 5% of
requests and the one that adds 40 ms were both rolled back. Whether the identical release was promoted,
and how fast, are the benchmark's figures, not this test's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.haproxy, pytest.mark.slow, pytest.mark.timeout(660)]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "live.py"


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    """Path of Debian's nginx; fails (never skips) when it is missing."""
    path = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    if path is None:
        pytest.fail("'nginx' is not installed. Install it with: sudo apt-get install -y nginx-light")
    return path


def test_quick_live_benchmark_rolls_back_the_bad_releases_of_a_real_nginx(
    haproxy_binary: str, wrk_binary: str, nginx_binary: str
) -> None:
    """One identical, one 5%-failing and one 40-ms-slower nginx release behind `fm up`: the JSON line
    counts one run of each kind, the identical one ended one way or another, both bad ones rolled back."""
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # --json: exactly one line on stdout, the table goes to stderr
    report = json.loads(lines[0])
    assert set(report["servers"]) == {"nginx"}, report
    assert set(report["servers"]["nginx"]) == {"1000"}, report
    cell = report["servers"]["nginx"]["1000"]
    identical = cell["identical"]
    assert {"runs", "promoted", "rolled_back", "promote_s_p95"} <= set(identical), identical
    assert identical["runs"] == 1, result.stderr[-4000:]
    assert identical["promoted"] + identical["rolled_back"] + identical["undecided"] == 1, identical
    for kind in ("errors_5pct", "plus_40ms"):
        assert {"runs", "rolled_back"} <= set(cell[kind]), (kind, cell[kind])
        assert cell[kind]["runs"] == 1, (kind, result.stderr[-4000:])
        assert cell[kind]["rolled_back"] == 1, (kind, result.stderr[-4000:])
