"""Metric providers turn a query's answer into one number, and every other answer into a ProviderError.

The HTTP providers run here on httpx's MockTransport (their real servers answer in the integration
tests); the built-in `logs://` provider runs on the in-memory metric store.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fridaymorning.errors import ConfigError, ProviderError
from fridaymorning.providers import QueryWindow, open_providers
from fridaymorning.providers.influxdb import InfluxQLProvider, last_value
from fridaymorning.providers.logs import LogMetricProvider
from fridaymorning.providers.prometheus import PrometheusProvider, single_value
from fridaymorning.testing import MemoryMetricStore, synthetic_window

WINDOW = QueryWindow(1000, 1060)


def vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {"i": str(i)}, "value": [1060, value]} for i, value in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (vector("0.25"), 0.25),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1060, "3"]}}, 3.0),
    ],
)
def test_prometheus_answer_with_one_number(body: dict[str, Any], value: float) -> None:
    """One series (or a scalar) gives its value."""
    assert single_value(body, "q") == value


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (vector(), "no series"),
        (vector("1", "2"), "gave 2 series; aggregate it"),
        (vector("NaN"), "not a finite number"),
        (vector("+Inf"), "not a finite number"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "gave a matrix"),
        ({"status": "error", "error": "parse error"}, "parse error"),
    ],
)
def test_prometheus_answer_without_one_number_is_an_error(body: dict[str, Any], message: str) -> None:
    """No data, several series, NaN, a range vector or an error are ProviderErrors, never a value."""
    with pytest.raises(ProviderError, match=message):
        single_value(body, "q")


def series(*rows: list[Any], count: int = 1) -> dict[str, Any]:
    one = {"name": "req", "columns": ["time", "mean"], "values": list(rows)}
    return {"results": [{"statement_id": 0, "series": [one] * count}]}


def test_influxdb_answer_gives_the_last_rows_value() -> None:
    """The last row's first value is the number."""
    assert last_value(series([1, 3.0], [2, 4.5]), "q") == 4.5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"results": [{"statement_id": 0}]}, "no series"),
        ({"results": [{"statement_id": 0, "error": "database not found: x"}]}, "database not found"),
        (series([1, 1.0], count=2), "gave 2 series"),
        (series([1, None]), "not a number"),
        ({"error": "bad"}, "no result"),
    ],
)
def test_influxdb_answer_without_one_number_is_an_error(body: dict[str, Any], message: str) -> None:
    """No series, an error, several series or a null are ProviderErrors, never a value."""
    with pytest.raises(ProviderError, match=message):
        last_value(body, "q")


async def test_prometheus_query_is_an_instant_query() -> None:
    """The query goes to /api/v1/query under the URL's prefix, at the server's own time."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=vector("7"))

    provider = PrometheusProvider("prometheus://127.0.0.1:9090/prom", transport=httpx.MockTransport(answer))
    assert await provider.run("up", WINDOW) == 7.0
    await provider.aclose()
    assert seen[0].url.path == "/prom/api/v1/query"
    assert dict(seen[0].url.params) == {"query": "up"}


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(400, json={"status": "error", "error": "1:5: parse error"}), "HTTP 400: 1:5: parse"),
        (httpx.Response(503, text="unavailable"), "HTTP 503: unavailable"),
        (httpx.Response(200, text="<html>"), "not JSON"),
    ],
)
async def test_http_failures_are_provider_errors(response: httpx.Response, message: str) -> None:
    """An HTTP error keeps the server's reason."""
    transport = httpx.MockTransport(lambda request: response)
    provider = PrometheusProvider("prometheus://127.0.0.1:9090", transport=transport)
    with pytest.raises(ProviderError, match=message):
        await provider.run("up", WINDOW)
    await provider.aclose()


async def test_unreachable_and_slow_servers_are_provider_errors() -> None:
    """A refused connection and a timeout are ProviderErrors naming the server."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    for handler, message in ((refuse, "ConnectError"), (stall, "no answer within")):
        provider = InfluxQLProvider("influxdb://127.0.0.1:8086/db", transport=httpx.MockTransport(handler))
        with pytest.raises(ProviderError, match=f"influxdb://127.0.0.1:8086/db: .*{message}"):
            await provider.run("SELECT 1", WINDOW)
        await provider.aclose()


async def test_influxdb_query_names_the_database() -> None:
    """The database comes from the URL's path; epoch seconds are asked for."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=series([1, 2.0]))

    provider = InfluxQLProvider("influxdb://127.0.0.1:8086/metrics", transport=httpx.MockTransport(answer))
    assert await provider.run("SELECT mean(v) FROM m", WINDOW) == 2.0
    await provider.aclose()
    assert seen[0].url.path == "/query"
    assert dict(seen[0].url.params) == {"db": "metrics", "q": "SELECT mean(v) FROM m", "epoch": "s"}


@pytest.mark.parametrize(
    "url", ["influxdb://127.0.0.1:8086", "influxdb://127.0.0.1:8086/a/b", "prometheus://nohostport"]
)
def test_provider_urls_without_what_they_need_are_config_errors(url: str) -> None:
    """A URL without a port, or an InfluxDB URL without one database, is refused when opened."""
    with pytest.raises(ConfigError):
        open_providers([url], MemoryMetricStore())


def test_providers_are_opened_once_per_url() -> None:
    """Checks naming the same provider share it; each scheme gets its implementation."""
    store = MemoryMetricStore()
    urls = [
        "prometheus://127.0.0.1:1",
        "victoriametrics://127.0.0.1:2",
        "prometheus://127.0.0.1:1",
        "logs://",
    ]
    providers = open_providers(urls, store)
    assert list(providers) == ["prometheus://127.0.0.1:1", "victoriametrics://127.0.0.1:2", "logs://"]
    assert isinstance(providers["victoriametrics://127.0.0.1:2"], PrometheusProvider)
    assert isinstance(providers["logs://"], LogMetricProvider)


def log_store() -> MemoryMetricStore:
    store = MemoryMetricStore()
    for second in range(1000, 1010):
        store.write([synthetic_window("web", "v2", second, requests=10, failed=1, latency_ms=40.0)])
    return store


@pytest.mark.parametrize(
    ("query", "value"),
    [
        ("requests(web, v2)", 100.0),
        ("rps(web, v2)", 100 / 60),
        ("errors(web, v2)", 10.0),
        ("error_rate(web, v2)", 0.1),
        (" p99( web , v2 ) ", 40.0),
        ("p50(web, v2)", 40.0),
        ("p999(web, v2)", 40.0),
        ("requests(web, v3)", 0.0),
    ],
)
async def test_log_provider_statistics(query: str, value: float) -> None:
    """Each statistic over the window's windows of one version (quantiles within the sketch's 1%)."""
    provider = LogMetricProvider("logs://", store=log_store())
    assert await provider.run(query, WINDOW) == pytest.approx(value, rel=0.01)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("p99(web, v3)", "no requests of v3 on web"),
        ("error_rate(web, v3)", "no requests"),
        ("median(web, v2)", "unknown statistic 'median'"),
        ("p99 web v2", "is not STATISTIC"),
    ],
)
async def test_log_provider_errors(query: str, message: str) -> None:
    """A rate or quantile of nothing, an unknown statistic or a malformed query is an error."""
    provider = LogMetricProvider("logs://", store=log_store())
    with pytest.raises(ProviderError, match=message):
        await provider.run(query, WINDOW)


async def test_log_provider_store_failure_is_a_provider_error() -> None:
    """A failing metric store is an error measurement, with the store's reason."""
    from fridaymorning.errors import StoreError

    store = log_store()
    store.fail_with = StoreError("database is locked")
    with pytest.raises(ProviderError, match="database is locked"):
        await LogMetricProvider("logs://", store=store).run("requests(web, v2)", WINDOW)
