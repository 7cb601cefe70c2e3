"""Embedded SQLite metric store: one row per (backend, version, second), sketches as blobs."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from fridaymorning.errors import StoreError
from fridaymorning.models import STATUS_CLASSES, Window
from fridaymorning.sketches import sketch_from_bytes, sketch_to_bytes

SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
    backend  TEXT    NOT NULL,
    version  TEXT    NOT NULL,
    second   INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    status   TEXT    NOT NULL,   -- counts by class, comma-separated in STATUS_CLASSES order
    failed   INTEGER NOT NULL,
    bytes    INTEGER NOT NULL,
    tr       BLOB    NOT NULL,
    ta       BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS windows_by_version ON windows (backend, version, second);
"""


def path_of_url(url: str) -> Path:
    """The file of an sqlite URL, as SQLAlchemy spells them: three slashes then a relative path
    ('sqlite:///metrics.db'), or four for an absolute one ('sqlite:////var/lib/fm/metrics.db')."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise StoreError(f"not an sqlite URL with a path: {url!r}")
    return Path(url[len(prefix) :])


class SqliteMetricStore:
    """MetricStore on an SQLite file in WAL mode. Safe to call from several threads."""

    def __init__(self, url: str) -> None:
        path = path_of_url(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open the metric store {path}: {error}") from error

    def write(self, windows: Sequence[Window]) -> None:
        rows = [
            (
                window.backend,
                window.version,
                window.second,
                window.requests,
                ",".join(map(str, window.status)),
                window.failed,
                window.bytes,
                sketch_to_bytes(window.tr),
                sketch_to_bytes(window.ta),
            )
            for window in windows
        ]
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT INTO windows VALUES (?,?,?,?,?,?,?,?,?)", rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                self._db.execute("ROLLBACK")
                raise StoreError(f"cannot write windows: {error}") from error

    def query(self, backend: str, version: str, start: int, end: int) -> list[Window]:
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT second, requests, status, failed, bytes, tr, ta FROM windows "
                    "WHERE backend = ? AND version = ? AND second >= ? AND second < ? ORDER BY second",
                    (backend, version, start, end),
                ).fetchall()
            except (sqlite3.Error, OverflowError) as error:
                raise StoreError(f"cannot query windows: {error}") from error
        merged: dict[int, Window] = {}
        for second, requests, status, failed, size, tr, ta in rows:
            window = Window(
                backend=backend,
                version=version,
                second=second,
                requests=requests,
                status=[int(count) for count in status.split(",")],
                failed=failed,
                bytes=size,
                tr=sketch_from_bytes(tr),
                ta=sketch_from_bytes(ta),
            )
            if second in merged:
                merged[second].merge(window)
            else:
                merged[second] = window
        return list(merged.values())

    def totals(self, backend: str, start: int, end: int) -> dict[str, dict[str, int]]:
        """Requests, failed and status counts per version over [start, end), without sketches."""
        with self._lock:
            rows = self._db.execute(
                "SELECT version, requests, failed, status FROM windows "
                "WHERE backend = ? AND second >= ? AND second < ?",
                (backend, start, end),
            ).fetchall()
        totals: dict[str, dict[str, int]] = {}
        for version, requests, failed, status in rows:
            entry = totals.setdefault(
                version, {"requests": 0, "failed": 0, **dict.fromkeys(STATUS_CLASSES, 0)}
            )
            entry["requests"] += requests
            entry["failed"] += failed
            for name, count in zip(STATUS_CLASSES, status.split(","), strict=True):
                entry[name] += int(count)
        return totals

    def close(self) -> None:
        with self._lock:
            self._db.close()
