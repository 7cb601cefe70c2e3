"""Processes seen through Linux's /proc: what the adopters of HAProxy and of the collector share."""

from __future__ import annotations

from pathlib import Path


def read_pid(pidfile: Path) -> int | None:
    """The pid in `pidfile`, or None when it is missing or holds no number."""
    try:
        text = pidfile.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def process_alive(pid: int) -> bool:
    """True while `pid` runs. A zombie has exited: it only waits for a parent (maybe init) to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
