"""InfluxQL checks against InfluxDB 1.x, through its /query API.

`influxdb://HOST:PORT/DATABASE` runs the query with GET, which InfluxDB allows only for reading
statements (SELECT, SHOW). The answer must be one series; its last row's first value is the number.
"""

from __future__ import annotations

from typing import Any, Unpack

from fridaymorning.errors import ConfigError, ProviderError
from fridaymorning.providers._http import HttpOptions, HttpProvider, finite
from fridaymorning.providers.base import QueryWindow


class InfluxQLProvider(HttpProvider):
    """A MetricProvider for InfluxQL on InfluxDB 1.x."""

    def __init__(self, url: str, **options: Unpack[HttpOptions]) -> None:
        super().__init__(url, **options)
        self.database = self.path.strip("/")
        if not self.database or "/" in self.database:
            raise ConfigError(f"provider {url!r} must name one database: influxdb://HOST:PORT/DATABASE")
        self.path = ""

    async def run(self, query: str, window: QueryWindow) -> float:
        body = await self.get_json("/query", {"db": self.database, "q": query, "epoch": "s"})
        return last_value(body, query)


def last_value(body: Any, query: str) -> float:
    """The first value of the last row of the one series in an InfluxDB answer, else ProviderError."""
    results = body.get("results") if isinstance(body, dict) else None
    if not results:
        raise ProviderError(f"query {query!r} gave no result: {body}")
    first = results[0]
    if "error" in first:
        raise ProviderError(f"query {query!r} failed: {first['error']}")
    series = first.get("series") or []
    if not series:
        raise ProviderError(f"query {query!r} gave no series (no data)")
    if len(series) > 1:
        raise ProviderError(f"query {query!r} gave {len(series)} series; a check needs one (drop GROUP BY)")
    columns, rows = series[0].get("columns") or [], series[0].get("values") or []
    if not rows or len(columns) < 2:
        raise ProviderError(f"query {query!r} gave no values")
    return finite(rows[-1][1], f"query {query!r} gave")
