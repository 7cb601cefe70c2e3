"""The controller's reads wait for the collector's mark, and refuse seconds the store may not hold yet."""

from __future__ import annotations

import pytest

from fridaymorning.errors import StoreError
from fridaymorning.models import Window
from fridaymorning.store import remote
from fridaymorning.store.remote import LineProtocolStore


class MarkedStore(LineProtocolStore):
    """A line-protocol store whose server is a list of marks (no network)."""

    flavour = "influxdb"
    default_port = 8086

    def __init__(self, marks: list[int]) -> None:
        super().__init__("influxdb://127.0.0.1:1/fm")
        self.marks = marks
        self.queries: list[tuple[int, int]] = []

    def newest_mark(self) -> int:
        return self.marks.pop(0) if len(self.marks) > 1 else self.marks[0]

    def query(self, backend: str, version: str, start: int, end: int) -> list[Window]:
        self.queries.append((start, end))
        return []


def test_a_read_waits_until_the_mark_covers_the_judged_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Marks 98, 99, then 100: the read of seconds below 100 happens once the mark reaches 100."""
    monkeypatch.setattr("fridaymorning.store.remote.time.sleep", lambda _: None)
    store = MarkedStore([98, 99, 100])
    assert store.query_complete("web", "v2", 50, 100) == []
    assert store.queries == [(50, 100)]
    store.close()


def test_a_store_that_stays_behind_is_an_error_naming_both_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mark stuck at 90 (the collector's writes fail) is a StoreError: the verdict is error, not pass."""
    monkeypatch.setattr(remote, "COMPLETE_WAIT_S", 0.0)
    store = MarkedStore([90])
    with pytest.raises(StoreError, match=r"up to second 90 .* up to 100"):
        store.query_complete("web", "v2", 50, 100)
    assert store.queries == []
    store.close()
