"""Processes seen through Linux's /proc: what the adopters of HAProxy, the collector and instances share.

Every reader returns None (or False) when the process is gone or /proc cannot be read: an adopter then
treats the process as not its own.
"""

from __future__ import annotations

from pathlib import Path


def read_pid(pidfile: Path) -> int | None:
    """The pid in `pidfile`, or None when it is missing or holds no number."""
    try:
        text = pidfile.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def stat_fields(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat from field 3 (the state) on, or None when the process is gone.

    Field 2, the command name, is in parentheses and may contain spaces and ')': the split is made
    after the last ')'. So element 0 is field 3 and element i is field i + 3.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat.rpartition(b")")[2].split()


def process_alive(pid: int) -> bool:
    """True while `pid` runs. A zombie has exited: it only waits for a parent (maybe init) to reap it."""
    fields = stat_fields(pid)
    return fields is not None and bool(fields) and fields[0] not in (b"Z", b"X")


def read_start_time(pid: int) -> int | None:
    """When a live process started, in clock ticks after boot (/proc/<pid>/stat field 22); None when it is
    gone, a zombie, or there is no /proc. A reused pid belongs to a later process, so (pid, start time)
    names one process."""
    fields = stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def read_cmdline(pid: int) -> list[str] | None:
    """The argv of a live process from /proc, or None when it is gone, a zombie, or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:  # zombies and kernel threads have an empty cmdline
        return None
    return [part.decode("utf-8", errors="surrogateescape") for part in raw.rstrip(b"\0").split(b"\0")]
