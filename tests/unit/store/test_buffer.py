"""The write buffer: ordered, batched, retried with backoff while the server is down, bounded."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import cast

import pytest

from fridaymorning.errors import StoreError
from fridaymorning.store.buffer import BufferSettings, LineBuffer, RejectedBatchError
from fridaymorning.store.remote import RemoteStoreUrl
from fridaymorning.store.victoriametrics import duration_seconds, judgeable_problem, parse_flags, selector
from fridaymorning.testing import wait_for_sync

FAST = BufferSettings(max_bytes=10, batch_lines=4, linger_s=0.0, backoff_initial_s=0.01, backoff_max_s=0.05)


class FlakyServer:
    """Accepts batches only while `up` is set; records every batch it accepted, in order."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.accepted: list[list[str]] = []
        self.attempts = 0

    def send(self, lines: Sequence[str]) -> None:
        self.attempts += 1
        if not self.up.is_set():
            raise ConnectionRefusedError("down")
        self.accepted.append(list(lines))


def test_lines_wait_out_an_outage_and_arrive_in_order_in_batches() -> None:
    """While the server is down nothing is lost: sends are retried, then every line arrives, in order."""
    server = FlakyServer()
    buffer = LineBuffer(server.send, FAST, "test")
    assert buffer.put(["a", "b", "c"]) and buffer.put(["d", "e", "f"])
    wait_for_sync(lambda: cast(int, buffer.stats()["retries"]) >= 3, "retries while the server is down")
    assert buffer.stats()["pending"] == 6
    assert buffer.stats()["failing_for_s"] is not None
    server.up.set()
    assert buffer.drain(30)
    assert [line for batch in server.accepted for line in batch] == list("abcdef")
    assert max(len(batch) for batch in server.accepted) <= FAST.batch_lines
    stats = buffer.stats()
    assert (stats["pending"], stats["sent"], stats["overflowed"], stats["failing_for_s"]) == (0, 6, 0, 0.0)
    buffer.close()


def test_a_full_buffer_refuses_the_newest_lines_and_counts_them() -> None:
    """Over `max_bytes`, the lines offered are refused and counted; those held are kept and sent."""
    server = FlakyServer()
    buffer = LineBuffer(server.send, FAST, "test")
    assert buffer.put([str(n) for n in range(8)])
    assert not buffer.put(["x", "y", "z"])
    assert buffer.stats()["overflowed"] == 3
    server.up.set()
    assert buffer.drain(30)
    assert [line for batch in server.accepted for line in batch] == [str(n) for n in range(8)]
    buffer.close()


def test_a_rejected_batch_is_dropped_and_counted_not_retried_forever() -> None:
    """A batch the server calls malformed (HTTP 400) cannot succeed later: dropped, counted."""
    calls: list[list[str]] = []

    def send(lines: Sequence[str]) -> None:
        calls.append(list(lines))
        raise RejectedBatchError("bad line")

    buffer = LineBuffer(send, FAST, "test")
    buffer.put(["bad"])
    assert buffer.drain(30)
    assert buffer.stats()["rejected"] == 1 and len(calls) == 1
    buffer.close()


def test_close_gives_up_on_a_dead_server_after_its_timeout() -> None:
    """Closing with the server down ends within close_timeout_s, reporting the lines left unsent."""
    server = FlakyServer()
    settings = BufferSettings(max_bytes=10, backoff_initial_s=0.01, backoff_max_s=0.02, close_timeout_s=0.2)
    buffer = LineBuffer(server.send, settings, "test")
    buffer.put(["a"])
    buffer.close()
    assert buffer.stats()["pending"] == 1
    with pytest.raises(RuntimeError):
        buffer.put(["b"])


def test_store_urls_name_host_port_database_and_buffer_options() -> None:
    """The URL gives the server and the database; buffer options are checked and typed."""
    url = RemoteStoreUrl("influxdb://fm:secret@db.example:9999/metrics?buffer_mb=5&backoff_max_s=2", 8086)
    assert (url.base_url, url.database, url.auth) == ("http://db.example:9999", "metrics", ("fm", "secret"))
    assert (url.settings.max_bytes, url.settings.backoff_max_s) == (5 * 1024 * 1024, 2.0)
    assert "secret" not in url.shown
    assert RemoteStoreUrl("victoriametrics://localhost/fm", 8428).base_url == "http://localhost:8428"
    for bad in (
        "influxdb://host:8086/",
        "influxdb://host/a/b",
        "influxdb://h/db?bufer_mb=5",
        "influxdb://h/db?buffer_mb=-1",
        "influxdb://h/db?buffer_mb=x",
    ):
        with pytest.raises(StoreError):
            RemoteStoreUrl(bad, 8086)


def test_victoriametrics_flags_that_hide_recent_data_are_refused_by_name() -> None:
    """The default 30 s latency offset, or dedup, is refused naming the flag; 1s passes."""
    default = judgeable_problem(parse_flags('-httpListenAddr="127.0.0.1:1"\n'))
    assert default is not None and "-search.latencyOffset" in default and "30 s" in default
    assert judgeable_problem(parse_flags('-search.latencyOffset="1s"')) is None
    assert "latencyOffset" in (judgeable_problem(parse_flags('-search.latencyOffset="1m"')) or "")
    assert "dedup" in (
        judgeable_problem(parse_flags('-search.latencyOffset="1s"\n-dedup.minScrapeInterval="1s"')) or ""
    )
    assert (duration_seconds("1m30s"), duration_seconds("500ms"), duration_seconds("2000")) == (
        90.0,
        0.5,
        2.0,
    )
    with pytest.raises(ValueError):
        duration_seconds("soon")


def test_selectors_escape_label_values() -> None:
    """A label value with quotes or backslashes cannot end the selector early."""
    assert selector({"db": 'a"b\\'}, "fm_.*") == '{__name__=~"fm_.*",db="a\\"b\\\\"}'


def test_a_batch_stays_under_its_byte_limit() -> None:
    """Batches are cut by size too (InfluxDB refuses bodies over 25 MB), yet a lone big line still goes."""
    server = FlakyServer()
    server.up.set()
    settings = BufferSettings(batch_lines=100, batch_bytes=5, linger_s=0.0)
    buffer = LineBuffer(server.send, settings, "test")
    buffer.put(["aa", "bb", "cc", "dddddddd"])
    assert buffer.drain(30)
    assert server.accepted == [["aa", "bb"], ["cc"], ["dddddddd"]]
    buffer.close()
