"""Processes seen through Linux's /proc: what the adopters of HAProxy, the collector and instances share.

Each reader returns None (or False) for a process that is gone, or where /proc cannot be read.
"""

from __future__ import annotations

import os
from pathlib import Path

# In /proc/<pid>/stat, the state: a zombie (or a dead task) has exited and only waits to be reaped.
EXITED_STATES = (b"Z", b"X")


def pids() -> list[int]:
    """The pids of every process /proc lists right now (a zombie among them); empty without /proc."""
    try:
        return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    except OSError:
        return []


def read_pid(pidfile: Path) -> int | None:
    """The pid in `pidfile`, or None when it is missing or holds no number."""
    try:
        text = pidfile.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def stat_fields(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat from field 3 (the state) on; None when the process is gone.

    Field 2, the command name, is in parentheses and may hold spaces and ')': the split is after the last ')'.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat.rpartition(b")")[2].split()


def process_alive(pid: int) -> bool:
    """True while `pid` runs. A zombie has exited: it only waits for a parent (maybe init) to reap it."""
    fields = stat_fields(pid)
    return fields is not None and len(fields) > 0 and fields[0] not in EXITED_STATES


def parent_pid(pid: int) -> int | None:
    """The pid of `pid`'s parent (field 4), or None."""
    fields = stat_fields(pid)
    try:
        return int(fields[1]) if fields else None
    except (IndexError, ValueError):
        return None


def read_start_time(pid: int) -> int | None:
    """When a live process started, in clock ticks after boot (field 22); None when it is gone or a zombie.

    A reused pid belongs to a later process, so (pid, start time) names one process.
    """
    fields = stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in EXITED_STATES:
        return None
    return int(fields[19])


def read_cmdline(pid: int) -> list[str] | None:
    """The argv of a live process, or None when it is gone, a zombie, or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:  # zombies and kernel threads have an empty cmdline
        return None
    return [part.decode("utf-8", errors="surrogateescape") for part in raw.rstrip(b"\0").split(b"\0")]


def read_cwd(pid: int) -> str | None:
    """The working directory of `pid` (relative paths in its argv are relative to it), or None."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def read_environ(pid: int) -> list[bytes] | None:
    """The environment of `pid` as it was at its last exec, one b'NAME=value' each, or None."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None


def handles_signals(pid: int, *signals: int) -> bool:
    """True when `pid` has a handler for each of `signals` and blocks none of them (/proc/<pid>/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return False
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    try:
        caught, blocked = int(fields["SigCgt"], 16), int(fields["SigBlk"], 16)
    except (KeyError, ValueError):
        return False
    mask = sum(1 << (number - 1) for number in signals)
    return caught & mask == mask and blocked & mask == 0
