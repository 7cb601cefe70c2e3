"""fridaymorning.procfs: what /proc tells of a process, and None for one that is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fridaymorning import procfs
from fridaymorning.testing import wait_for_sync

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def gone_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_running_process_is_described(tmp_path: Path) -> None:
    """For a running child: alive, its parent, its argv, working directory and environment."""
    argv = [sys.executable, "-c", "import sys; sys.stdin.read()", "marker"]
    child = subprocess.Popen(argv, cwd=tmp_path, env={"FM_MARK": "1"}, stdin=subprocess.PIPE)
    try:
        assert procfs.process_alive(child.pid)
        assert procfs.parent_pid(child.pid) == os.getpid()
        # the kernel shows the new argv a moment after exec returns to the parent: wait for it
        wait_for_sync(lambda: procfs.read_cmdline(child.pid) == argv, "the child's argv in /proc")
        assert procfs.read_cwd(child.pid) == str(tmp_path.resolve())
        assert b"FM_MARK=1" in (procfs.read_environ(child.pid) or [])
        assert procfs.read_start_time(child.pid) is not None
    finally:
        child.communicate(b"")


def test_a_gone_process_reads_as_none() -> None:
    """Every reader answers None (or False) for a pid that no longer runs."""
    pid = gone_pid()
    assert procfs.stat_fields(pid) is None
    assert not procfs.process_alive(pid)
    assert procfs.parent_pid(pid) is None
    assert procfs.read_start_time(pid) is None
    assert procfs.read_cmdline(pid) is None
    assert procfs.read_cwd(pid) is None
    assert procfs.read_environ(pid) is None
    assert not procfs.handles_signals(pid, signal.SIGUSR1)


def test_a_zombie_is_not_alive() -> None:
    """A child that has exited but is not reaped yet counts as gone, though /proc still lists it."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
        assert procfs.stat_fields(child.pid) is not None
        assert not procfs.process_alive(child.pid)
        assert procfs.read_start_time(child.pid) is None
    finally:
        child.wait()


@pytest.mark.parametrize(("text", "pid"), [("1234\n", 1234), ("", None), ("abc", None), ("0", None)])
def test_read_pid(tmp_path: Path, text: str, pid: int | None) -> None:
    """A pidfile gives its pid; an empty or garbled one gives None."""
    pidfile = tmp_path / "haproxy.pid"
    pidfile.write_text(text)
    assert procfs.read_pid(pidfile) == pid
    assert procfs.read_pid(tmp_path / "missing.pid") is None


def test_this_process_and_its_children_are_listed() -> None:
    """pids() lists every process, this one among them; descendants follow the parent links."""
    from fridaymorning.testing import descendants

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert {os.getpid(), child.pid} <= set(procfs.pids())
        assert child.pid in descendants(os.getpid())
    finally:
        child.communicate(b"")


def test_signal_handlers_are_read() -> None:
    """handles_signals is True for a signal with a handler, False for one left at its default action."""
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        assert procfs.handles_signals(os.getpid(), signal.SIGUSR1)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        assert not procfs.handles_signals(os.getpid(), signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_blocked_signal_is_not_handled() -> None:
    """A master is signalled only when it catches the signal and does not block it: a blocked SIGUSR2
    would be lost."""
    previous = signal.signal(signal.SIGUSR2, lambda *_: None)
    try:
        assert procfs.handles_signals(os.getpid(), signal.SIGUSR2)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
        try:
            assert not procfs.handles_signals(os.getpid(), signal.SIGUSR2)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
    finally:
        signal.signal(signal.SIGUSR2, previous)
