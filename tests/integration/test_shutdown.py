"""An orderly stop of the runtime logs no error: the collector stops polling HAProxy before HAProxy stops."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from fridaymorning.ingest.syslog import UdpCollector
from fridaymorning.runtime import Runtime

pytestmark = pytest.mark.haproxy

POLL_EVERY_S = 0.01  # so that a poll surely falls within HAProxy's stop, were it still polling then


async def test_stopping_the_runtime_logs_no_failed_poll_of_haproxy(
    runtime_config: Callable[..., Any],
    service_settings: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With HAProxy's DroppedLogs polled every 10 ms, a stop logs no warning or error at all: no poll
    meets HAProxy gone (a RouterError traceback, before the collector's polls were stopped first)."""
    watch = UdpCollector.watch_haproxy

    def watch_often(self: UdpCollector, router: Any, **settings: Any) -> None:
        watch(self, router, **{**settings, "dropped_logs_interval_s": POLL_EVERY_S})

    monkeypatch.setattr(UdpCollector, "watch_haproxy", watch_often)
    runtime = Runtime(runtime_config(service_settings()))
    try:
        await runtime.start()
    finally:
        with caplog.at_level(logging.WARNING):
            await runtime.stop()
    problems = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert problems == []
