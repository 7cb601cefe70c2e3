"""`bench/faults.py --quick --json` runs end to end against a real HAProxy.

Only correctness is asserted: the JSON line has its documented shape, every rollout whose `fm up` was
killed with kill -9 resumed and reached its end, a kill -9 of `fm up` alone lost no log line (the
collector runs in its own process), and no rollout without data was promoted. The timing
figures (seconds to DOWN, requests failed around a reload) belong to the benchmark's report, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# The quick run takes a few minutes when idle; a machine whose cores are busy needs several times that.
BENCH_DEADLINE_S = 1200

pytestmark = [pytest.mark.haproxy, pytest.mark.slow, pytest.mark.timeout(BENCH_DEADLINE_S + 60)]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "faults.py"

SHAPE = {
    "kill9": {"trials", "resumed", "failed_stable_requests", "log_lines_lost", "log_lines_lost_unreported"},
    "canary_crash": {"trials", "rolled_back", "requests_to_dead_server_after_down"},
    "haproxy_reload": {"trials", "weights_kept"},
    "no_data": {"trials", "promoted"},
    "fleet": {"instances", "killed_trials", "recovered", "failed_stable_requests"},
}


def test_quick_fault_benchmark_resumes_and_never_promotes_without_data(haproxy_binary: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=BENCH_DEADLINE_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # --json: exactly one line on stdout, the table goes to stderr
    report = json.loads(lines[0])
    for kind, keys in SHAPE.items():
        assert keys <= set(report[kind]), (kind, report[kind])
        assert all(isinstance(report[kind][key], int) for key in keys), (kind, report[kind])
    assert report["kill9"]["trials"] >= 1, result.stderr[-4000:]
    assert report["kill9"]["resumed"] == report["kill9"]["trials"], result.stderr[-4000:]
    # the collector runs in its own process: a kill -9 of fm up alone loses no log line
    assert report["kill9"]["phases"]["progressing"]["log_lines_lost"] == 0, result.stderr[-4000:]
    assert report["no_data"]["trials"] == 1, result.stderr[-4000:]
    assert report["no_data"]["promoted"] == 0, result.stderr[-4000:]
    assert report["fleet"]["killed_trials"] == 1, result.stderr[-4000:]
    assert report["fleet"]["recovered"] == 1, result.stderr[-4000:]
