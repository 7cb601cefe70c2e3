"""`fm status` shows a remote store's write buffer on the collector's line."""

from __future__ import annotations

from fridaymorning.cli import collector_line


def test_the_collector_line_shows_the_store_buffer_and_how_long_it_has_failed() -> None:
    """Pending, overflowed, rejected and retries; the failing time only while sends fail."""
    failing = {
        "lines": 10,
        "store_buffer": {"pending": 7, "overflowed": 0, "rejected": 0, "retries": 12, "failing_for_s": 4.0},
    }
    assert (
        "store buffer 7 pending, 0 overflowed, 0 rejected, 12 retries (failing for 4.0 s)"
        in collector_line(failing)
    )
    healthy = {
        "lines": 10,
        "store_buffer": {"pending": 0, "overflowed": 3, "rejected": 0, "retries": 12, "failing_for_s": 0.0},
    }
    assert collector_line(healthy).endswith("store buffer 0 pending, 3 overflowed, 0 rejected, 12 retries")
    assert "store buffer" not in collector_line({"lines": 10})
