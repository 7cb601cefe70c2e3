"""The monitoring servers that the store and provider tests start: each really takes data and answers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from fridaymorning.testing import wait_for_sync
from fridaymorning.testservers import RunningServer, loopback_port


@pytest.mark.influxdb
def test_influxdb_stores_and_returns_a_point(influxdb: RunningServer) -> None:
    created = httpx.post(f"{influxdb.url}/query", params={"q": "CREATE DATABASE probe"}, timeout=30)
    assert created.status_code == 200, created.text
    now_s = int(time.time())
    written = httpx.post(
        f"{influxdb.url}/write",
        params={"db": "probe", "precision": "s"},
        content=f"probe,service=web value=42 {now_s}\n",
        timeout=30,
    )
    assert written.status_code == 204, written.text
    answer = httpx.get(
        f"{influxdb.url}/query", params={"db": "probe", "q": "SELECT value FROM probe"}, timeout=30
    ).json()
    assert answer["results"][0]["series"][0]["values"][0][1] == 42


@pytest.mark.prometheus
def test_victoria_metrics_takes_line_protocol_and_shows_new_data(
    victoria_metrics: RunningServer,
) -> None:
    written = httpx.post(
        f"{victoria_metrics.url}/write",
        params={"db": "probe"},
        content="probe,service=web value=7\n",
        timeout=30,
    )
    assert written.status_code == 204, written.text

    def newest() -> list[Any]:
        httpx.get(f"{victoria_metrics.url}/internal/force_flush", timeout=30)
        return victoria_metrics.instant_query('probe_value{db="probe"}')

    result = wait_for_sync(newest, "VictoriaMetrics shows the point just written")
    assert result[0]["value"][1] == "7"


@pytest.mark.prometheus
def test_prometheus_scrapes_a_target(start_prometheus: Callable[..., RunningServer]) -> None:
    registry = CollectorRegistry()
    Gauge("fm_probe_value", "a value for the scrape test", registry=registry).set(3)
    port = loopback_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prometheus = start_prometheus([f"127.0.0.1:{port}"])
        result = wait_for_sync(
            lambda: prometheus.instant_query("fm_probe_value"), "Prometheus scraped the target"
        )
        assert result[0]["value"][1] == "3"
    finally:
        server.shutdown()
        thread.join(timeout=10)
