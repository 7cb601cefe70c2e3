"""InfluxDB 1.x metric store: `influxdb://host:8086/database`.

Windows are written with line protocol to `/write` (InfluxDB 1.x has no `/api/v2/write`), through the
bounded, retrying buffer of store.remote, and read back with InfluxQL, sketches included (see
store.lineprotocol for the schema). The database is created at the first write if it does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fridaymorning.errors import StoreError
from fridaymorning.models import Window
from fridaymorning.store.buffer import RejectedBatchError
from fridaymorning.store.lineprotocol import (
    COUNT_FIELDS,
    MARK_MEASUREMENT,
    NANOSECONDS,
    WINDOW_MEASUREMENT,
    merged_by_second,
    window_from_fields,
)
from fridaymorning.store.remote import LineProtocolStore

# Marks older than this are not looked at: a collector that runs writes one at least every few seconds.
MARK_LOOKBACK = "10m"


def influxql_string(value: str) -> str:
    """A single-quoted InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influxql_identifier(name: str) -> str:
    """A double-quoted InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def windows_query(backend: str, version: str, start: int, end: int) -> str:
    """The InfluxQL that reads the points of `version` on `backend` in seconds [start, end)."""
    columns = ", ".join(influxql_identifier(name) for name in (*COUNT_FIELDS, "tr_bins", "ta_bins"))
    return (
        f"SELECT {columns} FROM {influxql_identifier(WINDOW_MEASUREMENT)} "
        f"WHERE backend = {influxql_string(backend)} AND version = {influxql_string(version)} "
        f"AND time >= {int(start) * NANOSECONDS} AND time < {int(end) * NANOSECONDS}"
    )


def series_rows(answer: Any) -> list[dict[str, Any]]:
    """The rows of the first statement's series as dicts; StoreError for an error in the answer."""
    if "error" in answer:
        raise StoreError(f"InfluxDB: {answer['error']}")
    result = (answer.get("results") or [{}])[0]
    if "error" in result:
        raise StoreError(f"InfluxDB: {result['error']}")
    rows: list[dict[str, Any]] = []
    for series in result.get("series") or []:
        columns = series["columns"]
        rows.extend(dict(zip(columns, values, strict=True)) for values in series["values"])
    return rows


class InfluxMetricStore(LineProtocolStore):
    """MetricStore on InfluxDB 1.x over HTTP."""

    flavour = "influxdb"
    default_port = 8086

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._database_created = False

    def _send(self, lines: Sequence[str]) -> None:
        if not self._database_created:
            self._create_database()
        response = self._writer_client.post(
            "/write",
            params={"db": self.url.database, "precision": "ns"},
            content="\n".join(lines).encode(),
        )
        if response.status_code == 404:  # the database was dropped meanwhile: create it, then retry
            self._database_created = False
        if response.status_code == 400:
            raise RejectedBatchError(response.text[:300])
        response.raise_for_status()

    def _create_database(self) -> None:
        statement = f"CREATE DATABASE {influxql_identifier(self.url.database)}"
        response = self._writer_client.post("/query", params={"q": statement})
        response.raise_for_status()
        self._database_created = True

    def influxql(self, statement: str) -> list[dict[str, Any]]:
        """Rows of one InfluxQL statement on the store's database (timestamps in ns)."""
        answer = self._get_json("/query", {"db": self.url.database, "q": statement, "epoch": "ns"})
        try:
            return series_rows(answer)
        except StoreError as error:
            if "database not found" in str(error):
                return []
            raise

    def query(self, backend: str, version: str, start: int, end: int) -> list[Window]:
        if end <= start:
            return []
        rows = self.influxql(windows_query(backend, version, start, end))
        return merged_by_second(
            window_from_fields(backend, version, int(row["time"]) // NANOSECONDS, row) for row in rows
        )

    def newest_mark(self) -> int:
        rows = self.influxql(
            f"SELECT max(complete_below) FROM {influxql_identifier(MARK_MEASUREMENT)} "
            f"WHERE time > now() - {MARK_LOOKBACK}"
        )
        return int(rows[0]["max"]) if rows and rows[0].get("max") is not None else 0
