"""Custom checks against real monitoring servers: Prometheus scraping an exporter the test runs, a real
rollout through a real HAProxy, VictoriaMetrics fed by line protocol, and InfluxDB 1.x.

The canary (v2) is healthy by HAProxy's logs; only the custom checks can stop it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from fridaymorning.analysis.verdict import Verdict, VerdictPhase
from fridaymorning.config import MetricCheckConfig
from fridaymorning.controller.metric_checks import MetricChecks
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.errors import ProviderError
from fridaymorning.providers import QueryWindow
from fridaymorning.providers.influxdb import InfluxQLProvider
from fridaymorning.providers.prometheus import PrometheusProvider
from fridaymorning.testing import EVENT_DEADLINE_S, run_fm, wait_for, wait_for_sync
from fridaymorning.testservers import RunningServer, loopback_port

LATENCY_QUERY = 'max(app_latency_seconds{service="{{ service }}",version="{{ version }}"})'


@pytest.fixture
def exporter() -> Iterator[tuple[str, Gauge]]:
    """A prometheus_client exporter on a loopback port, reporting each version's latency."""
    registry = CollectorRegistry()
    gauge = Gauge("app_latency_seconds", "latency by version", ["service", "version"], registry=registry)
    gauge.labels("web", "v1").set(0.1)
    gauge.labels("web", "v2").set(0.9)
    port = loopback_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{port}", gauge
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def prometheus(start_prometheus: Callable[..., RunningServer], exporter: tuple[str, Gauge]) -> RunningServer:
    """A real Prometheus that has scraped the exporter at least once."""
    server = start_prometheus([exporter[0]])
    wait_for_sync(lambda: server.instant_query("app_latency_seconds"), "Prometheus scraped the exporter")
    return server


def provider_url(server: RunningServer, scheme: str = "prometheus") -> str:
    return f"{scheme}://127.0.0.1:{server.port}"


async def run_rollout(
    tmp_path: Path,
    runtime_config: Any,
    service_settings: Any,
    start_runtime: Any,
    checks: list[dict[str, Any]],
) -> tuple[Any, Any, Path, list[dict[str, Any]]]:
    """Deploy v2 with `checks` under 100 req/s of traffic; the final state, the runtime, the config's path,
    and the verdicts `/api/v1/status` showed while the rollout ran."""
    config = runtime_config(service_settings(checks=checks))
    path = tmp_path / "fridaymorning.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    runtime = await start_runtime(config)
    traffic = BackgroundTraffic(f"http://{config.services[0].frontend}/", rate=100)
    traffic.start()
    seen: list[dict[str, Any]] = []
    controller = runtime.controllers["web"]
    try:
        controller.deploy("v2")
        async with httpx.AsyncClient(base_url=f"http://{config.api.listen}") as api:
            while controller._task is not None and not controller._task.done():
                status = (await api.get("/api/v1/status")).json()
                verdict = status["services"][0]["verdict"]
                if verdict:
                    seen.append(verdict)
                await asyncio.sleep(0.05)
        final = await asyncio.wait_for(controller.wait(), 2 * EVENT_DEADLINE_S)
    finally:
        traffic.stop()
    return final, runtime, path, seen


def checks_of(verdict: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [check for check in verdict.get("checks", []) if check["name"] == name]


async def dashboard_verdict(runtime: Any, rollout_id: int) -> dict[str, Any]:
    """The verdict the dashboard's rollout page shows, read as a logged-in browser would."""
    token = (runtime.state_dir / "api-token").read_text().strip()
    async with httpx.AsyncClient(base_url=f"http://{runtime.config.api.listen}") as browser:
        assert (await browser.post("/login", data={"token": token})).status_code in (200, 303)
        answer = await browser.get(f"/dashboard/api/rollouts/{rollout_id}")
        assert answer.status_code == 200, answer.text
        verdict: dict[str, Any] = answer.json()["verdict"]
        return verdict


@pytest.mark.haproxy
@pytest.mark.prometheus
async def test_promql_check_past_its_threshold_rolls_the_canary_back(
    tmp_path: Path,
    runtime_config: Any,
    service_settings: Any,
    start_runtime: Any,
    prometheus: RunningServer,
) -> None:
    """Prometheus reports v2's latency at 0.9 s against a threshold of 0.5 s: the canary, healthy by
    the logs, is rolled back, and explain, the API and the dashboard name the check."""
    check = {
        "name": "app_latency",
        "provider": provider_url(prometheus),
        "query": LATENCY_QUERY,
        "fail_above": 0.5,
        "interval_s": 1,
    }
    final, runtime, path, _ = await run_rollout(
        tmp_path, runtime_config, service_settings, start_runtime, [check]
    )
    assert final.phase is RolloutPhase.ROLLED_BACK, final.reason
    assert final.reason.startswith("app_latency: measurement 1 of 1: 0.9 > 0.5"), final.reason

    explained = json.loads(run_fm("explain", str(final.id), "--json", config=path).stdout)
    failing = [e for e in explained["events"] if e["kind"] == "rolled_back"]
    assert failing and checks_of(failing[0]["verdict"], "app_latency")[0]["phase"] == "fail"
    human = run_fm("explain", str(final.id), config=path).stdout
    assert "app_latency" in human and "0.9 > 0.5" in human

    async with httpx.AsyncClient(base_url=f"http://{runtime.config.api.listen}") as api:
        rollout = (await api.get(f"/api/v1/rollouts/{final.id}")).json()
        services = (await api.get("/api/v1/services")).json()
    assert [check["name"] for check in services[0]["checks"]] == ["app_latency"]
    verdicts = [event["verdict"] for event in rollout["events"] if event["verdict"]]
    assert checks_of(verdicts[-1], "app_latency")[0]["statistic"] == 0.9
    assert checks_of(await dashboard_verdict(runtime, final.id), "app_latency")[0]["phase"] == "fail"

    replayed = run_fm("replay", str(final.id), "--json", config=path)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr


@pytest.mark.haproxy
@pytest.mark.prometheus
async def test_broken_queries_are_errors_never_a_pass_and_fail_at_their_limit(
    tmp_path: Path,
    runtime_config: Any,
    service_settings: Any,
    start_runtime: Any,
    prometheus: RunningServer,
) -> None:
    """Bad PromQL, and a Prometheus that is not there: each measurement is an error (shown in the
    status while the rollout runs), the healthy canary is never promoted, and the limit of errors in a
    row fails the check."""
    checks = [
        {
            "name": "bad_promql",
            "provider": provider_url(prometheus),
            "query": "max(app_latency_seconds{",
            "fail_above": 0.5,
            "interval_s": 1,
            "consecutive_error_limit": 5,
        },
        {
            "name": "no_server",
            "provider": f"prometheus://127.0.0.1:{loopback_port()}",
            "query": LATENCY_QUERY,
            "fail_above": 0.5,
            "interval_s": 1,
            "consecutive_error_limit": 5,
        },
    ]
    final, _, path, seen = await run_rollout(
        tmp_path, runtime_config, service_settings, start_runtime, checks
    )
    assert final.phase is RolloutPhase.ROLLED_BACK, final.reason
    assert "errors in a row (limit 5)" in final.reason
    shown = [
        check
        for verdict in seen
        for name in ("bad_promql", "no_server")
        for check in checks_of(verdict, name)
    ]
    assert shown and all(check["phase"] != "pass" for check in shown)
    assert any(check["phase"] == "error" and "HTTP 400" in check["detail"] for check in shown), shown
    assert any(check["phase"] == "error" and "ConnectError" in check["detail"] for check in shown), shown
    explained = json.loads(run_fm("explain", str(final.id), "--json", config=path).stdout)
    recorded = [e["verdict"] for e in explained["events"] if e["verdict"]]
    assert all(verdict["phase"] != "pass" for verdict in recorded)
    assert any(verdict["phase"] == "error" for verdict in recorded)


@pytest.mark.prometheus
async def test_promql_provider_against_prometheus(prometheus: RunningServer) -> None:
    """The provider reads one series' value; several series, no series and bad PromQL are errors."""
    provider = PrometheusProvider(provider_url(prometheus))
    now = int(time.time())
    window = QueryWindow(now - 60, now)
    try:
        assert await provider.run('max(app_latency_seconds{version="v2"})', window) == 0.9
        assert await provider.run("scalar(max(app_latency_seconds))", window) == 0.9
        with pytest.raises(ProviderError, match="gave 2 series"):
            await provider.run("app_latency_seconds", window)
        with pytest.raises(ProviderError, match="no series"):
            await provider.run('app_latency_seconds{version="v9"}', window)
        with pytest.raises(ProviderError, match="HTTP 400"):
            await provider.run("max(app_latency_seconds{", window)
    finally:
        await provider.aclose()


@pytest.mark.prometheus
async def test_promql_provider_against_victoria_metrics(victoria_metrics: RunningServer) -> None:
    """VictoriaMetrics answers the same PromQL: a value written by line protocol is read back."""
    now = int(time.time())
    lines = f"app,service=web,version=v2 latency=0.9 {now}\napp,service=web,version=v1 latency=0.1 {now}\n"
    written = httpx.post(
        f"{victoria_metrics.url}/write", params={"precision": "s"}, content=lines, timeout=30
    )
    assert written.status_code == 204, written.text
    provider = PrometheusProvider(provider_url(victoria_metrics, "victoriametrics"))
    query = 'max(app_latency{service="web",version="v2"})'

    async def value() -> float | None:
        httpx.get(f"{victoria_metrics.url}/internal/force_flush", timeout=30)
        try:
            return await provider.run(query, QueryWindow(now - 60, int(time.time())))
        except ProviderError:
            return None

    try:
        assert await wait_for(value, "VictoriaMetrics shows the written value") == 0.9
    finally:
        await provider.aclose()


def influx_check(
    name: str, query: str, database: str, server: RunningServer, **extra: Any
) -> MetricCheckConfig:
    return MetricCheckConfig.model_validate(
        {
            "name": name,
            "provider": f"influxdb://127.0.0.1:{server.port}/{database}",
            "query": query,
            "fail_above": 0.5,
            "interval_s": 0.01,
            "consecutive_error_limit": 3,
            **extra,
        }
    )


@pytest.mark.influxdb
async def test_influxql_checks_against_influxdb(influxdb: RunningServer) -> None:
    """InfluxQL checks, templated with the rollout's versions, against a real InfluxDB 1.x: the
    canary's value fails, the baseline's passes, a bad query and an unknown database are errors until
    their limit fails them."""
    assert httpx.post(f"{influxdb.url}/query", params={"q": "CREATE DATABASE app"}, timeout=30).is_success
    now = int(time.time())
    lines = (
        f"latency,service=web,version=v2 value=0.9 {now}\nlatency,service=web,version=v1 value=0.1 {now}\n"
    )
    written = httpx.post(
        f"{influxdb.url}/write", params={"db": "app", "precision": "s"}, content=lines, timeout=30
    )
    assert written.status_code == 204, written.text
    where = "\"service\" = '{{ service }}' AND time > now() - {{ window }}"
    select = 'SELECT max("value") FROM "latency" WHERE "version" = '
    checks = [
        influx_check("canary", select + "'{{ version }}' AND " + where, "app", influxdb),
        influx_check("baseline", select + "'{{ baseline }}' AND " + where, "app", influxdb),
        influx_check("bad_influxql", "SELECT max(value FROM latency", "app", influxdb),
        influx_check("no_database", "SELECT max(value) FROM latency", "nothere", influxdb),
    ]
    providers = {check.provider: InfluxQLProvider(check.provider) for check in checks}
    runner = MetricChecks("web", checks, providers)
    rollout = RolloutState(1, "web", "v2", "v1", RolloutPhase.PROGRESSING, 0, 10, now, now)
    empty = Verdict(VerdictPhase.PASS, (), "every check passed")

    def outcome() -> dict[str, Any]:
        verdict = runner.add_checks(empty, rollout, time.time())
        return {check.name: check for check in verdict.checks}

    try:
        first = await wait_for(
            lambda: all(c.n for c in outcome().values()) and outcome(), "every check measured"
        )
        assert first["bad_influxql"].phase in (VerdictPhase.ERROR, VerdictPhase.FAIL)
        final = await wait_for(
            lambda: all(c.n >= 3 for c in outcome().values()) and outcome(), "three measurements of each"
        )
    finally:
        await runner.close()
    assert final["canary"].phase is VerdictPhase.FAIL and "0.9 > 0.5" in final["canary"].detail
    assert final["baseline"].phase is VerdictPhase.PASS and final["baseline"].statistic == 0.1
    assert final["bad_influxql"].phase is VerdictPhase.FAIL
    assert "errors in a row (limit 3)" in final["bad_influxql"].detail
    assert "database not found" in final["no_database"].detail
    assert final["no_database"].phase is VerdictPhase.FAIL
