"""The log path outlives `fm up`: the collector runs in its own process, adopted after a crash.

Before, the collector lived inside `fm up`: a `kill -9` under load left no windows for the seconds
until the restart (about 4,300 requests HAProxy counted were never stored at 900 req/s), and `fm
status` did not say so, since its counters started again at zero. Here a real `fm up` (HAProxy, the
demo app, traffic on loopback) is killed with SIGKILL; every request HAProxy counted must be stored,
and the counters go on. Then the collector process itself is killed: `fm up` starts another, which
counts what was lost meanwhile from HAProxy's counters, and `fm status` shows it.
"""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.testing import FmUpProcess

pytestmark = [pytest.mark.haproxy, pytest.mark.slow, pytest.mark.timeout(400)]

RATE = 150.0
CONNECTIONS = 32  # BackgroundTraffic's client connections


def admin(state_dir: Path, command: str) -> str:
    """One command on HAProxy's admin socket; its whole answer."""
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(5)
        connection.connect(str(state_dir / "haproxy.sock"))
        connection.sendall(command.encode() + b"\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer.decode()


def counted_by_haproxy(state_dir: Path, backend: str = "web") -> int:
    """Requests HAProxy counted for the backend since its worker started (BACKEND row's stot)."""
    lines = admin(state_dir, "show stat").splitlines()
    header = lines[0][2:].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == backend and row.get("svname") == "BACKEND":
            return int(row["stot"])
    raise AssertionError(f"no BACKEND row for {backend}")


def stored_requests(state_dir: Path) -> int:
    """Requests in every window of the metric store."""
    with sqlite3.connect(f"file:{state_dir / 'metrics.db'}?mode=ro", uri=True, timeout=5) as db:
        return int(db.execute("SELECT COALESCE(SUM(requests), 0) FROM windows").fetchone()[0])


def collector_stats(up: FmUpProcess) -> dict[str, Any]:
    """The collector's counters as `fm status` gets them."""
    return dict(httpx.get(up.api + "/status", timeout=5).json()["collector"])


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = 120) -> Any:
    """The first truthy value of `check()`, polled until a deadline sized for a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def config(tmp_path: Path, runtime_config, service_settings) -> Path:  # type: ignore[no-untyped-def]
    """A one-service `fm up` config with a fast reconciliation."""
    settings = runtime_config(service_settings()).model_dump(mode="json")
    settings["collector"]["reconcile_interval_s"] = 5
    path = tmp_path / "fridaymorning.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def stored_once_steady(state_dir: Path, steady_s: float = 5.0) -> int:
    """After the traffic stopped: the store's request count once it has not changed for `steady_s`
    (longer than the collector's lateness and flush), polled until a deadline sized for a loaded machine."""
    last, since = stored_requests(state_dir), time.monotonic()

    def steady() -> bool:
        nonlocal last, since
        now = stored_requests(state_dir)
        if now != last:
            last, since = now, time.monotonic()
        return time.monotonic() - since >= steady_s

    wait_until(steady, "the store to take the last windows")
    return last


def settle(state_dir: Path) -> int:
    """After the traffic stopped: HAProxy's count, once every line of it is stored."""
    counted = counted_by_haproxy(state_dir)
    return int(wait_until(lambda: stored_requests(state_dir) >= counted and counted, "the last windows"))


def test_kill_9_of_fm_up_loses_no_log_line(config: Path) -> None:
    """SIGKILL of `fm up` under traffic: the collector process goes on receiving and storing, the next
    `fm up` adopts it (same pid, counters not reset), and every request HAProxy counted is stored."""
    state_dir = Path(yaml.safe_load(config.read_text())["state_dir"])
    first = FmUpProcess(config, timeout_s=120)
    traffic = BackgroundTraffic(first.frontend, rate=RATE)
    traffic.start()
    second = None
    try:
        wait_until(lambda: collector_stats(first).get("requests", 0) > 100, "requests to be collected")
        before = collector_stats(first)
        first.kill()
        time.sleep(3)  # the data plane and the collector alone
        second = FmUpProcess(config, timeout_s=120)
        after = collector_stats(second)
        assert after["pid"] == before["pid"]
        assert after["requests"] > before["requests"]
        time.sleep(1)
    finally:
        traffic.stop()
    try:
        counted = settle(state_dir)
        assert stored_requests(state_dir) == counted
        assert collector_stats(second).get("lost_across_restart", 0) == 0
    finally:
        assert second is not None
        second.stop()


def test_a_killed_collector_is_restarted_and_its_loss_is_reported(config: Path) -> None:
    """SIGKILL of the collector process: `fm up` starts another, which compares HAProxy's counters
    with the store over the gap, and `fm status` shows the lines lost as `lost_across_restart`, as
    many as HAProxy counted and the store lacks."""
    import os
    import signal

    state_dir = Path(yaml.safe_load(config.read_text())["state_dir"])
    up = FmUpProcess(config, timeout_s=120)
    traffic = BackgroundTraffic(up.frontend, rate=RATE)
    traffic.start()
    try:
        # the first reconciled snapshot is kept: the successor starts from it
        wait_until(lambda: (state_dir / "collector-reconciled.json").exists(), "a kept snapshot")
        old = collector_stats(up)["pid"]
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: collector_stats(up)["pid"] not in (old, None), "a new collector process")
        stats = wait_until(
            lambda: (s := collector_stats(up)).get("reconciliation", {}).get("restart_checks") and s,
            "the check across the restart",
        )
    finally:
        traffic.stop()
    try:
        lost = stats["lost_across_restart"]
        assert stats["process_restarts"] == 1
        assert lost > 0
        counted = counted_by_haproxy(state_dir)
        true_loss = counted - stored_once_steady(state_dir)
        # HAProxy dates a keep-alive request from the moment its connection went idle, so a request
        # can be counted after a snapshot and logged with a second before it: at most one per client
        # connection at each end of the checked interval.
        assert abs(lost - true_loss) <= 2 * CONNECTIONS, (lost, true_loss)
    finally:
        up.stop()
