"""Metric providers for custom checks, chosen by URL scheme through the registry.

`MetricProvider` is the protocol (base.py). Implementations: `logs://` (the collector's own windows
in the metric store), `prometheus://` and `victoriametrics://` (PromQL over the HTTP query API) and
`influxdb://HOST:PORT/DB` (InfluxQL over InfluxDB 1.x's /query). Each is imported only when a check
uses it.
"""

from __future__ import annotations

from collections.abc import Iterable

from fridaymorning.providers.base import MetricProvider, QueryWindow
from fridaymorning.registry import resolve
from fridaymorning.store.base import MetricStore

__all__ = ["MetricProvider", "QueryWindow", "open_providers"]


def open_providers(urls: Iterable[str], store: MetricStore) -> dict[str, MetricProvider]:
    """One provider per distinct URL; `store` serves the built-in `logs://` provider."""
    providers: dict[str, MetricProvider] = {}
    for url in urls:
        if url not in providers:
            providers[url] = resolve("provider", url)(url, store=store)
    return providers
