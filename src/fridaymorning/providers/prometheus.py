"""PromQL checks against Prometheus or VictoriaMetrics, through their HTTP query API.

`prometheus://HOST:PORT[/PREFIX]` and `victoriametrics://HOST:PORT` run an instant query
(`GET /api/v1/query`) at the server's current time, as Flagger and Argo Rollouts do, so the two
machines' clocks need not agree; the query's own range (`[{{ window }}]`) says how far back it
looks. The query must give one number: a scalar, or an instant vector of exactly one series
(aggregate with `sum(...)`, `max(...)`, ... when it has more). VictoriaMetrics hides the newest 30 s
of data from instant queries unless it runs with `-search.latencyOffset=1s` or less.
"""

from __future__ import annotations

from typing import Any

from fridaymorning.errors import ProviderError
from fridaymorning.providers._http import HttpProvider, finite
from fridaymorning.providers.base import QueryWindow


class PrometheusProvider(HttpProvider):
    """A MetricProvider for PromQL: Prometheus 2.x, and VictoriaMetrics' Prometheus-compatible API."""

    async def run(self, query: str, window: QueryWindow) -> float:
        body = await self.get_json("/api/v1/query", {"query": query})
        return single_value(body, query)


def single_value(body: Any, query: str) -> float:
    """The one number of a Prometheus query answer, else ProviderError saying what came instead."""
    if not isinstance(body, dict) or body.get("status") != "success":
        reason = body.get("error") if isinstance(body, dict) else body
        raise ProviderError(f"query {query!r} failed: {reason}")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return finite(result[1], f"query {query!r} gave")
    if kind != "vector":
        raise ProviderError(f"query {query!r} gave a {kind}; a check needs an instant vector or a scalar")
    if not result:
        raise ProviderError(f"query {query!r} gave no series (no data)")
    if len(result) > 1:
        raise ProviderError(
            f"query {query!r} gave {len(result)} series; aggregate it to one, e.g. with sum(...) or max(...)"
        )
    return finite(result[0]["value"][1], f"query {query!r} gave")
