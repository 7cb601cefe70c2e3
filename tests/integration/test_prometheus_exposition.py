"""A real Prometheus scrapes a live `fm up` (in-process, with a real HAProxy) during a real rollout:
the series /metrics promises are there with sane values, and every query of the Grafana dashboard
returns data from it."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.testing import EVENT_DEADLINE_S, wait_for
from fridaymorning.testservers import RunningServer

pytestmark = [pytest.mark.haproxy, pytest.mark.prometheus]

DASHBOARD = (
    Path(__file__).resolve().parents[2]
    / "deploy"
    / "grafana"
    / "dashboards"
    / "fridaymorning-prometheus.json"
)
SCRAPE_INTERVAL_S = 1.0
# What Grafana puts for its variables, sized for a 1 s scrape: a rate needs two samples in its window.
GRAFANA_VARIABLES = {"$__rate_interval": "5s", "$__interval": "2s", "$service": "web"}


def dashboard_queries() -> list[tuple[str, str]]:
    """(what, PromQL) of every panel target and annotation of the dashboard, Grafana's variables put in."""
    model = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in model["panels"]
        for target in panel["targets"]
    ]
    queries += [(f"annotation {a['name']!r}", a["expr"]) for a in model["annotations"]["list"]]
    return [(what, substitute(expr)) for what, expr in queries]


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
    return expr


class PromQL:
    """Queries to the real Prometheus' HTTP API."""

    def __init__(self, server: RunningServer) -> None:
        self.client = httpx.AsyncClient(base_url=server.url, timeout=30)

    async def get(self, path: str, **params: Any) -> Any:
        answer = await self.client.get(path, params=params)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", (params, body)
        return body["data"]

    async def instant(self, expr: str, by: str = "version") -> dict[str, float]:
        """{the label `by` (or ''): value} of an instant query."""
        data = await self.get("/api/v1/query", query=expr)
        return {series["metric"].get(by, ""): float(series["value"][1]) for series in data["result"]}

    async def range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        data = await self.get("/api/v1/query_range", query=expr, start=start, end=end, step="1s")
        result: list[dict[str, Any]] = data["result"]
        return result


def values_of(series: list[dict[str, Any]]) -> list[float]:
    return [float(value) for each in series for _, value in each["values"] if not math.isnan(float(value))]


async def test_prometheus_scrapes_a_live_rollout_and_every_dashboard_query_has_data(
    runtime_config: Callable[..., Any],
    start_runtime: Callable[..., Any],
    start_prometheus: Callable[..., RunningServer],
) -> None:
    """Prometheus scrapes /metrics every second while v2 is rolled out through HAProxy and promoted:
    the canary weight walks the steps, the status goes from running to succeeded, the request counters
    end equal to the store's totals, the latency histogram is cumulative, and every panel and
    annotation query of deploy/grafana/dashboards/fridaymorning-prometheus.json returns data."""
    runtime = await start_runtime(runtime_config())
    server = await asyncio.to_thread(start_prometheus, [runtime.config.api.listen], SCRAPE_INTERVAL_S)
    prometheus = PromQL(server)
    await wait_for(
        lambda: prometheus.instant('canary_total{job="fridaymorning"}'), "Prometheus scraped /metrics"
    )
    traffic = BackgroundTraffic(f"http://{runtime.config.services[0].frontend}/", rate=100)
    traffic.start()
    started = time.time()
    try:
        controller = runtime.controllers["web"]
        controller.deploy("v2")
        final = await asyncio.wait_for(controller.wait(), timeout=2 * EVENT_DEADLINE_S)
        assert final is not None and final.phase is RolloutPhase.PROMOTED, final
        # Scrapes after the promotion, so that the final status and weight are in Prometheus too.
        await wait_for(
            lambda: status_is(prometheus, 1.0, after=final.finished_at or time.time()),
            "Prometheus scraped the promoted status",
        )
    finally:
        traffic.stop()
    # Range queries evaluate at start + k steps: past the newest sample, so that it is among them.
    ended = time.time() + 2 * SCRAPE_INTERVAL_S

    weights = await prometheus.range('canary_weight{name="web", workload="web"}', started, ended)
    assert {20.0, 50.0} <= set(values_of(weights)), "the canary's weight walked the steps"
    statuses = values_of(await prometheus.range('canary_status{name="web"}', started, ended))
    assert 0.0 in statuses, "running (0) during the rollout"
    assert statuses[-1] == 1.0, "succeeded (1) after the promotion"

    store = runtime.metrics

    async def counters_match_the_store() -> dict[str, float] | None:
        scraped = await prometheus.instant('fm_requests_total{service="web"}')
        totals = store.totals("web", 0, 2**31)
        stored = {
            version: float(counts["requests"]) for version, counts in totals.items() if version in scraped
        }
        return scraped if scraped == stored and set(scraped) >= {"v1", "v2"} else None

    scraped = await wait_for(counters_match_the_store, "fm_requests_total equal to the store's totals")
    assert scraped["v2"] >= 100, "v2 served at least both steps' minimum requests"

    buckets = await prometheus.instant(
        'fm_response_time_seconds_bucket{service="web", version="v2"}', by="le"
    )
    ordered = [buckets[le] for le in sorted(buckets, key=lambda le: math.inf if le == "+Inf" else float(le))]
    assert ordered == sorted(ordered) and ordered[-1] > 0, (
        "cumulative buckets, the last one holding every request"
    )
    count = await prometheus.instant('fm_response_time_seconds_count{service="web", version="v2"}')
    assert count["v2"] == ordered[-1]

    services = await prometheus.get("/api/v1/label/name/values", **{"match[]": "canary_status"})
    assert "web" in services, "the dashboard's $service variable finds the service"
    queries = dashboard_queries()
    assert len(queries) >= 10
    empty = []
    for what, expr in queries:
        if not values_of(await prometheus.range(expr, started - 5, ended)):
            empty.append(f"{what}: {expr}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)


async def status_is(prometheus: PromQL, status: float, after: float) -> bool:
    """True once Prometheus holds a canary_status sample of `status` scraped after `after`."""
    series = 'canary_status{name="web"}'
    found = await prometheus.instant(f"{series} == {status:g} and timestamp({series}) > {after:.3f}")
    return bool(found)
