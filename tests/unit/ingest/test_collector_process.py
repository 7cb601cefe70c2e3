"""Adopting the collector process: only a live collector of this state directory, with our settings."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fridaymorning.config import Config
from fridaymorning.ingest.process import (
    MODULE,
    PIDFILE,
    SETTINGS_FILE,
    STATS_FILE,
    CollectorProcess,
    collector_settings,
)
from fridaymorning.procfs import read_cmdline
from fridaymorning.testing import unstarted_service

SETTINGS = {"protocol": "udp", "host": "127.0.0.1", "port": 5140, "backends": ["web"]}


@pytest.fixture
def lookalike(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line names the collector module and this state dir's settings file."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", MODULE, str(tmp_path / SETTINGS_FILE)]
    )
    deadline = time.monotonic() + 30
    while MODULE not in (read_cmdline(process.pid) or []):  # until exec is done
        assert time.monotonic() < deadline, "the lookalike never ran"
        time.sleep(0.01)
    yield process
    process.kill()
    process.wait()


def test_a_live_collector_with_our_settings_is_adopted(
    tmp_path: Path, lookalike: subprocess.Popen[bytes]
) -> None:
    """The pidfile names a live process running the collector module on our settings file, and the
    file holds our settings: adoptable. Other settings: running, but not adoptable."""
    (tmp_path / PIDFILE).write_text(f"{lookalike.pid}\n")
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(SETTINGS))
    collector = CollectorProcess(SETTINGS, tmp_path)
    assert collector.adoptable() == lookalike.pid
    changed = CollectorProcess({**SETTINGS, "port": 5141}, tmp_path)
    assert (changed.running_pid(), changed.adoptable()) == (lookalike.pid, None)


def test_a_pidfile_naming_another_process_is_not_adopted(tmp_path: Path) -> None:
    """A pid reused by another program (here the test itself), or a dead one, is never adopted."""
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(SETTINGS))
    for pid in (str(__import__("os").getpid()), "999999999", "garbage"):
        (tmp_path / PIDFILE).write_text(pid)
        assert CollectorProcess(SETTINGS, tmp_path).running_pid() is None


def test_stats_come_from_the_file_the_process_rewrites(tmp_path: Path) -> None:
    """`stats()` is what the process last wrote, with its pid and whether it runs."""
    (tmp_path / STATS_FILE).write_text(json.dumps({"requests": 7, "lost_across_restart": 2}))
    stats = CollectorProcess(SETTINGS, tmp_path).stats()
    assert (stats["requests"], stats["lost_across_restart"], stats["process_running"]) == (7, 2, False)


def test_settings_carry_what_the_process_needs(tmp_path: Path) -> None:
    """Listen address, protocol, the store and the admin socket as absolute paths, and the backends."""
    config = Config.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "collector": {"listen": "127.0.0.1:6514", "protocol": "tcp"},
            "services": [unstarted_service()],
        }
    )
    settings = collector_settings(config)
    assert (settings["protocol"], settings["host"], settings["port"]) == ("tcp", "127.0.0.1", 6514)
    assert settings["backends"] == ["web"]
    assert settings["store_url"].startswith("sqlite:////") and Path(settings["admin_socket"]).is_absolute()


def test_fm_status_prints_the_lines_lost_across_a_restart() -> None:
    """`fm status` names the loss a restarted collector found, beside the other counters."""
    from fridaymorning.cli import collector_line

    line = collector_line({"requests": 10, "lost_across_restart": 4, "reconciliation": {"missing_lines": 0}})
    assert "lost_across_restart 4" in line and "0 lines missing" in line
