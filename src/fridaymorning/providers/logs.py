"""The built-in provider: the collector's own per-second windows, read from the metric store.

`logs://` answers queries of the form `STATISTIC(BACKEND, VERSION)` over the check's window, e.g.
`p99({{ service }}, {{ version }})`. Statistics: `requests`, `rps` (requests per second of the window),
`errors` (failed requests), `error_rate` (errors / requests) and `pNN`, a quantile of the server
response time Tr in ms (`p50`, `p95`, `p99`, `p999` for 0.999). A rate or a quantile of no requests is
an error, not a zero.
"""

from __future__ import annotations

import asyncio
import re

from fridaymorning.errors import ConfigError, FridayMorningError, ProviderError
from fridaymorning.models import Window
from fridaymorning.providers.base import QueryWindow
from fridaymorning.store.base import MetricStore

_QUERY = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*\(\s*([\w.]+)\s*,\s*([\w.]+)\s*\)\s*$")
_QUANTILE = re.compile(r"^p([0-9]{2,4})$")
STATISTICS = ("requests", "rps", "errors", "error_rate", "pNN")


class LogMetricProvider:
    """A MetricProvider over the metric store's windows: what the judge reads, as single numbers."""

    def __init__(self, url: str, *, store: MetricStore | None = None) -> None:
        if store is None:
            raise ConfigError(f"provider {url!r} reads the metric store, and none was given")
        self.store = store

    async def run(self, query: str, window: QueryWindow) -> float:
        statistic, backend, version = parse_query(query)
        try:
            windows = await asyncio.to_thread(self.store.query, backend, version, window.start, window.end)
        except FridayMorningError as error:
            raise ProviderError(f"the metric store failed: {error}") from None
        return statistic_of(statistic, windows, window, f"{version} on {backend}")

    async def aclose(self) -> None:
        pass  # the store belongs to whoever gave it


def parse_query(query: str) -> tuple[str, str, str]:
    """(statistic, backend, version) of 'p99(web, v2)'; ProviderError for anything else."""
    match = _QUERY.match(query)
    if match is None:
        raise ProviderError(f"query {query!r} is not STATISTIC(BACKEND, VERSION), e.g. p99(web, v2)")
    statistic = match.group(1)
    if statistic not in STATISTICS and not _QUANTILE.match(statistic):
        raise ProviderError(f"unknown statistic {statistic!r}; valid: {', '.join(STATISTICS)}")
    return statistic, match.group(2), match.group(3)


def statistic_of(statistic: str, windows: list[Window], window: QueryWindow, what: str) -> float:
    """The statistic over the merged windows; ProviderError when it needs requests and there are none."""
    total = Window("", "", window.start)
    for second in windows:
        total.merge(second)
    if statistic == "requests":
        return float(total.requests)
    if statistic == "rps":
        return total.requests / max(window.seconds, 1)
    if statistic == "errors":
        return float(total.failed)
    if total.requests == 0 or (statistic != "error_rate" and total.tr.count == 0):
        raise ProviderError(f"no requests of {what} in [{window.start}, {window.end}) to compute {statistic}")
    if statistic == "error_rate":
        return total.failed / total.requests
    digits = statistic[1:]
    quantile = int(digits) / 10 ** len(digits)
    value = total.tr.get_quantile_value(quantile)
    if value is None:
        raise ProviderError(f"no latency of {what} in [{window.start}, {window.end})")
    return float(value)
