"""cleanup_stale: what a previous fm recorded is killed only when it is verifiably still that process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fridaymorning.config import PlatformConfig
from fridaymorning.errors import PlatformError
from fridaymorning.platform.local import (
    STATE_FILE_NAME,
    LocalPlatform,
    cleanup_stale,
)
from fridaymorning.procfs import read_cmdline, read_start_time
from fridaymorning.testing import wait_for_sync

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)", "fm-stale-test"]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(SLEEPER, start_new_session=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=5)


def entry(pid: int, argv: list[str], start_time: int | None, /, **overrides: object) -> dict[str, object]:
    """A file entry as LocalPlatform writes it."""
    fields: dict[str, object] = {
        "pid": pid,
        "version": "v1",
        "label": "",
        "index": 1,
        "host": "127.0.0.1",
        "port": 1,
        "argv": argv,
        "cmdline": argv,
        "start_time": start_time,
    }
    fields.update(overrides)
    return fields


def write_state(workdir: Path, entries: list[object]) -> Path:
    path = workdir / STATE_FILE_NAME
    path.write_text(json.dumps({"fm_pid": 1, "instances": entries}))
    return path


def wait_for_cmdline(pid: int, argv: list[str]) -> None:
    """Popen returns after exec, but be safe: /proc shows the new argv only once exec completed."""
    wait_for_sync(lambda: read_cmdline(pid) == argv, f"pid {pid} showing argv {argv}", interval_s=0.02)


def test_no_file_means_nothing_to_clean(tmp_path: Path) -> None:
    """A workdir without an instance file is the normal case: nothing is killed."""
    assert cleanup_stale(tmp_path) == []


def test_unreadable_file_is_removed_and_nothing_is_killed(tmp_path: Path) -> None:
    """A truncated or corrupt file cannot identify processes safely, so it is discarded."""
    path = tmp_path / STATE_FILE_NAME
    path.write_text('{"instances": [{"pid": ')
    assert cleanup_stale(tmp_path) == []
    assert not path.exists()


def test_matching_live_process_is_killed(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """A recorded pid with the recorded start time and command line is a leftover instance: it is killed."""
    wait_for_cmdline(sleeper.pid, SLEEPER)
    path = write_state(tmp_path, [entry(sleeper.pid, SLEEPER, read_start_time(sleeper.pid))])
    assert cleanup_stale(tmp_path) == [sleeper.pid]
    assert sleeper.wait(timeout=5) == -9
    assert not path.exists()


def test_reused_pid_with_another_cmdline_is_spared(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """A recorded pid now running another program (pid reuse) must not be killed."""
    wait_for_cmdline(sleeper.pid, SLEEPER)
    other = ["other", "program"]
    write_state(tmp_path, [entry(sleeper.pid, other, read_start_time(sleeper.pid))])
    assert cleanup_stale(tmp_path) == []
    assert sleeper.poll() is None


def test_reused_pid_with_the_same_cmdline_but_another_start_time_is_spared(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """The same command line started later under a recycled pid is another process: it is not killed."""
    wait_for_cmdline(sleeper.pid, SLEEPER)
    start_time = read_start_time(sleeper.pid)
    assert start_time is not None
    write_state(tmp_path, [entry(sleeper.pid, SLEEPER, start_time - 1)])
    assert cleanup_stale(tmp_path) == []
    assert sleeper.poll() is None


def test_entry_without_start_time_is_never_killed(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """Without a start time nothing guards against pid reuse, so the entry cannot be vouched for."""
    wait_for_cmdline(sleeper.pid, SLEEPER)
    write_state(tmp_path, [entry(sleeper.pid, SLEEPER, None)])
    assert cleanup_stale(tmp_path) == []
    assert sleeper.poll() is None


def test_dead_pids_and_malformed_entries_are_skipped(tmp_path: Path) -> None:
    """Entries for exited processes, or without a usable pid and argv, are ignored without error."""
    entries: list[object] = [
        entry(2**22 + 12345, SLEEPER, 1),  # above pid_max: certainly not running
        entry(1, ["init"], read_start_time(1)),  # never pid 1, whatever its cmdline
        entry(12, SLEEPER, 1, pid="12"),
        {"pid": 12345},
        "not an entry",
    ]
    write_state(tmp_path, entries)
    assert cleanup_stale(tmp_path) == []


async def test_missing_program_fails_before_anything_is_spawned(tmp_path: Path) -> None:
    """A command whose program is not installed raises PlatformError naming it, and records nothing."""
    config = PlatformConfig(command=["fm-no-such-program-xyz", "--port", "{port}"])
    platform = LocalPlatform(config, workdir=str(tmp_path))
    with pytest.raises(PlatformError, match="'fm-no-such-program-xyz' was not found"):
        await platform.start("v1", 1)
    assert platform.instances == []
    assert not (tmp_path / STATE_FILE_NAME).exists()
    await platform.close()


async def test_invalid_version_is_refused(tmp_path: Path) -> None:
    """A version that could not be an HAProxy server name is refused before any process starts."""
    platform = LocalPlatform(PlatformConfig(command=["true", "{port}"]))
    with pytest.raises(PlatformError, match="not a valid version"):
        await platform.start("v1; rm -rf /", 1)
    await platform.close()


@pytest.mark.parametrize("label", ["v1 baseline", "-v1", "v1-baseline", "x" * 65])
async def test_invalid_label_is_refused(label: str) -> None:
    """A label that could not be an HAProxy server name (or would hide the index after '-') is refused."""
    platform = LocalPlatform(PlatformConfig(command=["true", "{port}"]))
    with pytest.raises(PlatformError, match="not a valid label"):
        await platform.start("v1", 1, label=label)
    await platform.close()
