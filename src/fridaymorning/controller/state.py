"""Rollout state in SQLite. Every transition is one transaction: the new state and its event."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from fridaymorning.controller.phases import ACTIVE_PHASES, RolloutPhase, RolloutState
from fridaymorning.errors import RolloutError, StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
    name   TEXT PRIMARY KEY,
    stable TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    service         TEXT    NOT NULL,
    version         TEXT    NOT NULL,
    baseline        TEXT    NOT NULL,
    phase           TEXT    NOT NULL,
    step_index      INTEGER NOT NULL,
    canary_weight   INTEGER NOT NULL,
    started_at      REAL    NOT NULL,
    step_started_at REAL    NOT NULL,
    finished_at     REAL,
    reason          TEXT    NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id    INTEGER NOT NULL REFERENCES rollouts(id),
    at            REAL    NOT NULL,
    kind          TEXT    NOT NULL,
    phase         TEXT    NOT NULL,
    step_index    INTEGER NOT NULL,
    canary_weight INTEGER NOT NULL,
    reason        TEXT    NOT NULL,
    verdict       TEXT
);
"""

ROLLOUT_COLUMNS = (
    "id, service, version, baseline, phase, step_index, canary_weight, "
    "started_at, step_started_at, finished_at, reason"
)


def recorded_stable_versions(path: str | Path) -> dict[str, str]:
    """The stable version each service was promoted to, read from a state store without changing it.

    Empty when the store does not exist or records no promotion yet.
    """
    if not Path(path).exists():
        return {}
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            rows = db.execute("SELECT name, stable FROM services").fetchall()
        return {str(name): str(stable) for name, stable in rows}
    except sqlite3.Error as error:
        raise StoreError(f"cannot read the state store {path}: {error}") from error


def row_to_state(row: tuple[Any, ...]) -> RolloutState:
    """A rollouts row, in ROLLOUT_COLUMNS order, as a RolloutState."""
    values = list(row)
    values[4] = RolloutPhase(values[4])
    return RolloutState(*values)


class StateStore:
    """Services' stable versions, rollouts and their events. Safe to call from several threads."""

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        # Called with each event once it is committed (the API's event stream listens here).
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._committed: list[dict[str, Any]] = []

    def stable_version(self, service: str, default: str) -> str:
        """The service's stable version; `default` (from the config) until a promotion changes it."""
        with self._lock:
            row = self._db.execute("SELECT stable FROM services WHERE name = ?", (service,)).fetchone()
        return str(row[0]) if row else default

    def create_rollout(self, service: str, version: str, baseline: str, now: float) -> RolloutState:
        """Record a new rollout in phase STARTING; refused while another rollout of the service runs."""
        with self._transaction():
            active = self._active_row(service)
            if active is not None:
                raise RolloutError(
                    f"rollout {active.id} of {service} ({active.version}) is still {active.phase}: "
                    "wait for it to finish, or `fm abort` it"
                )
            cursor = self._db.execute(
                "INSERT INTO rollouts (service, version, baseline, phase, step_index, canary_weight, "
                "started_at, step_started_at) VALUES (?, ?, ?, ?, 0, 0, ?, ?)",
                (service, version, baseline, RolloutPhase.STARTING.value, now, now),
            )
            rollout_id = int(cursor.lastrowid or 0)
            state = RolloutState(
                rollout_id, service, version, baseline, RolloutPhase.STARTING, 0, 0, now, now
            )
            self._insert_event(state, now, "started", f"deploy {version} against {baseline}", None)
        return state

    def transition(
        self,
        state: RolloutState,
        now: float,
        kind: str,
        reason: str,
        verdict: dict[str, Any] | None = None,
        **changes: Any,
    ) -> RolloutState:
        """Apply `changes` to the rollout and record the event, in one transaction."""
        new_state = replace(state, reason=reason, **changes)
        with self._transaction():
            self._db.execute(
                "UPDATE rollouts SET phase = ?, step_index = ?, canary_weight = ?, "
                "step_started_at = ?, finished_at = ?, reason = ? WHERE id = ?",
                (
                    new_state.phase.value,
                    new_state.step_index,
                    new_state.canary_weight,
                    new_state.step_started_at,
                    new_state.finished_at,
                    new_state.reason,
                    new_state.id,
                ),
            )
            if new_state.phase is RolloutPhase.PROMOTED:
                self._db.execute(
                    "INSERT INTO services (name, stable) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET stable = excluded.stable",
                    (new_state.service, new_state.version),
                )
            self._insert_event(new_state, now, kind, reason, verdict)
        return new_state

    def record(
        self, state: RolloutState, now: float, kind: str, reason: str, verdict: dict[str, Any] | None
    ) -> None:
        """Record an event that changes nothing (a judged interval), for `fm explain`."""
        with self._lock:
            self._insert_event(state, now, kind, reason, verdict)
        self._publish()

    def rollout(self, rollout_id: int) -> RolloutState | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?", (rollout_id,)
            ).fetchone()
        return row_to_state(row) if row else None

    def active_rollout(self, service: str) -> RolloutState | None:
        with self._lock:
            return self._active_row(service)

    def rollouts(self, service: str | None = None, limit: int = 50) -> list[RolloutState]:
        """Most recent rollouts first."""
        query = f"SELECT {ROLLOUT_COLUMNS} FROM rollouts"
        params: tuple[Any, ...] = ()
        if service is not None:
            query += " WHERE service = ?"
            params = (service,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
        return [row_to_state(row) for row in rows]

    def events(self, rollout_id: int) -> list[dict[str, Any]]:
        """Every event of a rollout in order, verdicts decoded."""
        with self._lock:
            rows = self._db.execute(
                "SELECT at, kind, phase, step_index, canary_weight, reason, verdict FROM events "
                "WHERE rollout_id = ? ORDER BY id",
                (rollout_id,),
            ).fetchall()
        return [
            {
                "at": at,
                "kind": kind,
                "phase": phase,
                "step_index": step_index,
                "canary_weight": weight,
                "reason": reason,
                "verdict": json.loads(verdict) if verdict else None,
            }
            for at, kind, phase, step_index, weight, reason, verdict in rows
        ]

    def latest_verdict(self, rollout_id: int) -> dict[str, Any] | None:
        """The verdict of the rollout's latest judged event, or None if it was never judged."""
        with self._lock:
            row = self._db.execute(
                "SELECT verdict FROM events WHERE rollout_id = ? AND verdict IS NOT NULL "
                "ORDER BY id DESC LIMIT 1",
                (rollout_id,),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def event_counts(self) -> dict[tuple[str, str], int]:
        """How many events of each kind every service's rollouts have recorded: {(service, kind): n}."""
        with self._lock:
            rows = self._db.execute(
                "SELECT rollouts.service, events.kind, COUNT(*) FROM events "
                "JOIN rollouts ON rollouts.id = events.rollout_id GROUP BY rollouts.service, events.kind"
            ).fetchall()
        return {(str(service), str(kind)): int(count) for service, kind, count in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _active_row(self, service: str) -> RolloutState | None:
        phases = tuple(phase.value for phase in ACTIVE_PHASES)
        placeholders = ",".join("?" * len(phases))
        row = self._db.execute(
            f"SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE service = ? AND phase IN ({placeholders}) "
            "ORDER BY id DESC LIMIT 1",
            (service, *phases),
        ).fetchone()
        return row_to_state(row) if row else None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction under the lock: committed when the block ends, rolled back (its
        events dropped) when it raises; the committed events go to the listeners after the lock."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._committed.clear()
                raise
        self._publish()

    def _publish(self) -> None:
        events, self._committed = self._committed, []
        for event in events:
            for listener in self.listeners:
                listener(event)

    def _insert_event(
        self, state: RolloutState, now: float, kind: str, reason: str, verdict: dict[str, Any] | None
    ) -> None:
        self._db.execute(
            "INSERT INTO events (rollout_id, at, kind, phase, step_index, canary_weight, reason, verdict) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                state.id,
                now,
                kind,
                state.phase.value,
                state.step_index,
                state.canary_weight,
                reason,
                json.dumps(verdict) if verdict is not None else None,
            ),
        )
        self._committed.append(
            {
                "rollout_id": state.id,
                "service": state.service,
                "version": state.version,
                "at": now,
                "kind": kind,
                "phase": state.phase.value,
                "step_index": state.step_index,
                "canary_weight": state.canary_weight,
                "reason": reason,
                "verdict": verdict,
            }
        )
